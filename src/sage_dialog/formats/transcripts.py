"""Self-play transcripts of the original SAGE scripts (FORMATS.md section 3): plain text, one file a seed.

A file is named by the seed's first eight words joined with ``_`` plus ``.txt``
(:func:`transcript_name`) and holds one line a turn::

    🧑‍💻: I failed my driving test again.
    🤖: {u_motivation: venting, ...} {a_motivation: comfort, ...} That's rough. Third time?

Variants:

* ``plain``: as above (tags written with canonical short keys; both spellings are read);
* ``full``: the file of the same name under ``full/``; the assistant line the judge kept starts
  ``🤖✅: `` and each dropped candidate follows it on a line starting with a TAB and ``🤖❌: ``;
* ``converted``: every ``{…}`` block removed and the prefixes replaced by ``user: `` / ``assistant: ``.

One turn is one line: the writer escapes a newline in the text as ``\\n`` (a carriage return as
``\\r``, a backslash as ``\\\\``) and a ``{`` that would start the reply as ``\\{``, so that any text a
model wrote reads back unchanged, here and in the original scripts (which read line by line and see
the escapes as text). The reader undoes these escapes. A line that starts with none of the prefixes
continues the previous turn (how other writers store text with newlines). Dropped
candidates of a read ``full`` transcript are kept in ``dialog.meta["dropped"]`` as a list of
``{"turn": <index of the kept assistant turn>, "candidates": [<Turn as dict>, ...]}``, which is also what
:func:`write_transcript` writes them from, so conversions keep them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core import io, sac
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.schema import Dialog, SearchNode, Turn
from sage_dialog.formats._common import content_to_turn, role_order_problem, tags_problem, turn_content

Variant = Literal["plain", "full", "converted"]

USER = "🧑‍💻: "
ASSISTANT = "🤖: "
KEPT = "🤖✅: "
DROPPED = "\t🤖❌: "
CONV_USER = "user: "
CONV_ASSISTANT = "assistant: "
_UNSAFE = re.compile(r"[/\\\x00]")
# room for "_<k>.txt" and a temporary file's prefix/suffix within 255 bytes
MAX_STEM_BYTES = 200
_UNESCAPE = re.compile(r"\\([\\nr{])")
_UNESCAPED = {"\\": "\\", "n": "\n", "r": "\r", "{": "{"}


def escape_text(text: str) -> str:
    """One turn's text as one transcript line that no reader mistakes for tags or a new turn."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    stripped = out.lstrip()
    if stripped.startswith("{"):  # reply text that would read as a tag block
        out = out[: len(out) - len(stripped)] + "\\" + stripped
    return out


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text`."""
    return _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], text) if "\\" in text else text


def transcript_name(seed: str) -> str:
    """File name of a seed's transcript: its first eight words joined with ``_``, plus ``.txt``.

    Path separators inside words become ``-`` so the name stays one file. A name longer than
    :data:`MAX_STEM_BYTES` bytes (file systems take 255) is cut there and ends in a short hash of the
    seed, so two long seeds still get two names.
    """
    words = seed.split()[:8]
    stem = _UNSAFE.sub("-", "_".join(words) or "empty")
    if len(stem.encode("utf-8")) > MAX_STEM_BYTES:
        digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:12]
        cut = stem.encode("utf-8")[: MAX_STEM_BYTES - 13].decode("utf-8", errors="ignore")
        stem = f"{cut}-{digest}"
    return stem + ".txt"


# ---------------------------------------------------------------------------------------------
# rendering


def _assistant_content(t: Turn) -> str:
    return turn_content(t.model_copy(update={"text": escape_text(t.text)}), "chained")


def render_transcript(d: Dialog, variant: Variant = "plain", dropped: dict[int, list[Turn]] | None = None) -> str:
    """The text of one transcript. ``dropped`` (full variant) maps an assistant turn index to candidates."""
    if dropped is None:
        dropped = dropped_from_meta(d)
    lines: list[str] = []
    for i, t in enumerate(d.turns):
        if t.role == "system":
            continue  # the original transcripts have no system line
        if variant == "converted":
            prefix = CONV_USER if t.role == "user" else CONV_ASSISTANT
            lines.append(prefix + escape_text(sac.strip_all(t.text)))
        elif t.role == "user":
            # the original's user simulator wrote tags too: keep whatever the turn carries
            lines.append(USER + sac.render_turn(escape_text(t.text), state=t.state, action=t.action))
        elif variant == "full":
            lines.append(KEPT + _assistant_content(t))
            lines.extend(DROPPED + _assistant_content(c) for c in dropped.get(i, []))
        else:
            lines.append(ASSISTANT + _assistant_content(t))
    return "".join(line + "\n" for line in lines)


def convert_transcript_text(text: str) -> str:
    """The original conversion of a plain transcript: tag blocks removed, prefixes ``user``/``assistant``."""
    out = []
    for line in text.splitlines():
        for prefix, new in ((USER, CONV_USER), (ASSISTANT, CONV_ASSISTANT), (KEPT, CONV_ASSISTANT)):
            if line.startswith(prefix):
                out.append(new + sac.strip_all(line[len(prefix):]))
                break
        else:
            if not line.startswith(DROPPED):
                out.append(sac.strip_all(line))
    return "".join(line + "\n" for line in out)


def dropped_from_meta(d: Dialog) -> dict[int, list[Turn]]:
    """``meta["dropped"]`` of a dialog as ``{turn index: [Turn, ...]}``."""
    out: dict[int, list[Turn]] = {}
    for item in d.meta.get("dropped", []):
        out.setdefault(int(item["turn"]), []).extend(Turn.model_validate(c) for c in item["candidates"])
    return out


def dropped_to_meta(dropped: dict[int, list[Turn]]) -> list[dict[str, Any]]:
    return [{"turn": i, "candidates": [c.model_dump(mode="json", exclude_none=True) for c in cands]}
            for i, cands in sorted(dropped.items()) if cands]


# ---------------------------------------------------------------------------------------------
# parsing


def detect_variant(path: str | Path) -> Variant:
    """``full`` if a line is marked ✅/❌, ``converted`` if lines start ``user:``/``assistant:``, else ``plain``."""
    try:
        head = Path(path).read_bytes()[:65536].decode("utf-8", errors="replace")
    except OSError:
        return "plain"
    lines = head.splitlines()
    if any(line.startswith((KEPT, DROPPED)) for line in lines):
        return "full"
    if lines and lines[0].startswith((CONV_USER, CONV_ASSISTANT)):
        return "converted"
    return "plain"


def _prefixes(variant: Variant) -> list[tuple[str, str]]:
    if variant == "converted":
        return [(CONV_USER, "user"), (CONV_ASSISTANT, "assistant")]
    if variant == "full":
        return [(USER, "user"), (KEPT, "assistant"), (ASSISTANT, "assistant"), (DROPPED, "dropped")]
    return [(USER, "user"), (ASSISTANT, "assistant")]


def parse_transcript(text: str, dialog_id: str, *, variant: Variant = "plain", path: object = "<text>",
                     problems: list[str] | None = None) -> Dialog:
    """Parse one transcript's text. Problems are appended to ``problems`` when given, else raised.

    Record numbers in problem lines are 1-based line numbers.
    """
    probs: list[str] = []
    entries: list[tuple[int, str, str]] = []  # (line, kind, content)
    prefixes = _prefixes(variant)
    # split on newlines only: other line separators (\x0b, \x1c, \u2028, ...) are text a model wrote
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, raw_line in enumerate(lines, start=1):
        line = raw_line.removesuffix("\r")
        if variant == "plain" and line.startswith((KEPT, DROPPED)):
            probs.append(f"{where(path, lineno)}: ✅/❌ marks belong in the full/ variant")
            continue
        hit = next(((p, k) for p, k in prefixes if line.startswith(p)), None)
        if hit is None and variant == "full" and line.lstrip(" \t").startswith(("🤖❌", "🤖✅")):
            # a marker that is not exactly ours would silently join the previous turn and lose a candidate
            probs.append(f"{where(path, lineno)}: expected '🤖✅: ' or a TAB then '🤖❌: ', got {line[:12]!r}")
            continue
        if hit is not None:
            entries.append((lineno, hit[1], line[len(hit[0]):]))
        elif entries:
            ln, kind, content = entries[-1]
            entries[-1] = (ln, kind, content + "\n" + line)  # a turn whose text has newlines
        elif line.strip():
            shown = " or ".join(f"'{p.strip()}'" for p, _ in prefixes[:2])
            probs.append(f"{where(path, lineno)}: expected a line starting with {shown}")
    if not entries and not probs:
        probs.append(f"{path}: empty transcript, expected lines starting with '{_prefixes(variant)[0][0].strip()}'")
    turns: list[Turn] = []
    dropped: dict[int, list[Turn]] = {}
    lines_of: list[int] = []
    for lineno, kind, content in entries:
        if variant != "converted" and (tp := tags_problem(content)):
            probs.append(f"{where(path, lineno, 'text')}: {tp}")
            continue
        if kind == "dropped":
            if not turns or turns[-1].role != "assistant":
                probs.append(f"{where(path, lineno)}: a dropped candidate must follow the kept assistant line")
                continue
            dropped.setdefault(len(turns) - 1, []).append(_unescaped(content_to_turn("assistant", content)))
            continue
        role: Literal["user", "assistant"] = "user" if kind == "user" else "assistant"
        if variant == "converted":
            if sac.parse(content).has_tags:
                probs.append(f"{where(path, lineno, 'text')}: converted transcripts carry no tag blocks")
            turns.append(Turn(role=role, text=unescape_text(content)))
        elif role == "user":
            turns.append(_unescaped(_user_turn(content)))
        else:
            turns.append(_unescaped(content_to_turn("assistant", content)))
        lines_of.append(lineno)
    if turns and (bad := role_order_problem([t.role for t in turns])):
        probs.append(f"{where(path, lines_of[bad[0]], 'role')}: {bad[1]}")
    if problems is not None:
        problems.extend(probs)
    elif probs:
        raise UserError(probs)
    meta: dict[str, Any] = {}
    if dropped:
        meta["dropped"] = dropped_to_meta(dropped)
    return Dialog(id=dialog_id, turns=turns, meta=meta)


def _unescaped(t: Turn) -> Turn:
    return t.model_copy(update={"text": unescape_text(t.text)}) if "\\" in t.text else t


def _user_turn(content: str) -> Turn:
    """A user line; tag blocks the original user simulator wrote go to ``state`` / ``action``."""
    p = sac.parse(content)
    if not p.has_tags:
        return Turn(role="user", text=content)
    return Turn(role="user", text=p.reply, state=p.state or p.plain, action=p.action)


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{path}: no such file")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
        return None


def read_transcript(path: str | Path, variant: Variant | None = None) -> Dialog:
    """One transcript file as a dialog (id: the file stem); variant detected when None."""
    p = Path(path)
    problems: list[str] = []
    text = _read_text(p, problems)
    if text is None:
        raise UserError(problems)
    return parse_transcript(text, p.stem, variant=variant or detect_variant(p), path=p)


def _files(folder: Path, variant: Variant) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: expected a folder of .txt transcripts")
    if variant == "full" and (folder / "full").is_dir():
        folder = folder / "full"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise UserError(f"{folder}: no .txt transcripts")
    return files


def read_transcript_dir(folder: str | Path, variant: Variant = "plain") -> list[Dialog]:
    """Every ``*.txt`` transcript of a folder, sorted by name (for ``full``, its ``full/`` if present)."""
    problems: list[str] = []
    out = []
    for f in _files(Path(folder), variant):
        text = _read_text(f, problems)
        if text is not None:
            out.append(parse_transcript(text, f.stem, variant=variant, path=f, problems=problems))
    if problems:
        raise UserError(problems)
    return out


def check_transcript_dir(folder: str | Path, variant: Variant = "plain") -> tuple[list[str], int]:
    """Every problem of every transcript in a folder, and the number of files."""
    problems: list[str] = []
    files = _files(Path(folder), variant)
    for f in files:
        text = _read_text(f, problems)
        if text is not None:
            parse_transcript(text, f.stem, variant=variant, path=f, problems=problems)
    return problems, len(files)


# ---------------------------------------------------------------------------------------------
# writing


def _seed_of(d: Dialog) -> str:
    return next((t.text for t in d.turns if t.role == "user"), d.id)


def write_transcript(path: str | Path, d: Dialog, variant: Variant = "plain",
                     dropped: dict[int, list[Turn]] | None = None) -> Path:
    """Atomically write one transcript file."""
    with io.atomic_write(path) as fh:
        fh.write(render_transcript(d, variant, dropped))
    return Path(path)


def write_transcript_dir(folder: str | Path, dialogs: Iterable[Dialog], variant: Variant = "plain") -> int:
    """Write one file a dialog, named by :func:`transcript_name` of its first user turn.

    Two seeds with the same first eight words get ``_2``, ``_3``, ... before ``.txt`` (the original
    overwrote the first). Returns the number of files.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    n = 0
    for d in dialogs:
        name = transcript_name(_seed_of(d))
        stem, k = name[:-4], 2
        while name in used:
            name, k = f"{stem}_{k}.txt", k + 1
        used.add(name)
        write_transcript(out / name, d, variant)
        n += 1
    return n


def write_transcripts(folder: str | Path, items: Sequence[tuple[Dialog, dict[int, list[Turn]]]]) -> int:
    """The original layout of a search run: plain transcripts in ``folder`` and the full ones in ``folder/full``."""
    dialogs = []
    for d, dropped in items:
        meta = dict(d.meta)
        meta["dropped"] = dropped_to_meta(dropped)
        dialogs.append(d.model_copy(update={"meta": meta}))
    write_transcript_dir(Path(folder) / "full", dialogs, "full")
    return write_transcript_dir(folder, dialogs, "plain")


def dialog_from_tree(nodes: Iterable[SearchNode]) -> tuple[Dialog, dict[int, list[Turn]]]:
    """The kept path of one search tree as a dialog, and the dropped candidates at each assistant turn.

    The path starts at the root (``parent`` None) and follows, at each step, the child marked
    ``kept`` (the first one when several are). Dropped candidates are the kept node's unkept siblings.
    """
    items = list(nodes)
    if not items:
        raise UserError("empty search tree")
    children: dict[str | None, list[SearchNode]] = {}
    for nd in items:
        children.setdefault(nd.parent, []).append(nd)
    roots = children.get(None, [])
    if len(roots) != 1:
        raise UserError(f"tree {items[0].tree}: expected one root node, found {len(roots)}")
    turns: list[Turn] = []
    dropped: dict[int, list[Turn]] = {}
    node: SearchNode | None = roots[0]
    while node is not None:
        turns.append(Turn(role=node.role, text=node.text, state=node.state, action=node.action))
        kids = children.get(node.id, [])
        kept = [k for k in kids if k.kept]
        nxt = kept[0] if kept else None
        if nxt is not None:
            others = [Turn(role=k.role, text=k.text, state=k.state, action=k.action) for k in kids if k is not nxt]
            if others:
                dropped[len(turns)] = others
        node = nxt
    return Dialog(id=roots[0].tree, turns=turns), dropped
