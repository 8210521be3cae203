"""EmpatheticDialogues (Rashkin et al., 2019): the CSV corpus and the plain seed-utterance file.

The CSV has a header ``conv_id,utterance_idx,context,prompt,speaker_idx,utterance,...``; commas
inside text are written ``_comma_``; ``context`` is one of 32 emotion labels (shipped as the label set
``empathetic_emotions``). Some rows of the public files carry extra trailing fields: like the
corpus' own reader we split on commas and keep the first six fields.

Each conversation becomes a :class:`Dialog`: the first speaker is the user (the one who lived the
situation), the other the assistant (the listener); consecutive utterances of one speaker are merged
so roles alternate. The gold emotion and situation go to ``meta``.

The original SAGE scripts started self-play from ``test_sent.tsv``: one seed utterance per line
(:func:`read_seeds` / :func:`write_seeds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import iter_text_lines
from sage_dialog.core.schema import Dialog, Role, Turn

SOURCE = "empatheticdialogues"
REQUIRED_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance")


def unescape(text: str) -> str:
    """Undo the corpus' comma escaping and squeeze whitespace."""
    return " ".join(text.replace("_comma_", ",").split())


def _dialog(path: Path, conv_id: str, rows: list[tuple[int, int, str, str, str, str]]) -> Dialog:
    rows.sort(key=lambda r: r[1])
    first_speaker = rows[0][4]
    turns: list[Turn] = []
    for _lineno, _idx, _ctx, _prompt, speaker, text in rows:
        role: Role = "user" if speaker == first_speaker else "assistant"
        if turns and turns[-1].role == role:
            turns[-1].text = f"{turns[-1].text} {text}"  # merge so roles alternate
        else:
            turns.append(Turn(role=role, text=text))
    _, _, context, prompt, _, _ = rows[0]
    return Dialog(
        id=conv_id,
        turns=turns,
        meta={"source": SOURCE, "file": path.name, "emotion": context, "situation": prompt},
    )


def read_empathetic_csv(path: str | Path) -> Iterator[Dialog]:
    """Stream the dialogs of an EmpatheticDialogues CSV file (rows grouped by ``conv_id``)."""
    p = Path(path)
    it = iter_text_lines(p)
    header_line = next(it, None)
    if header_line is None or not header_line[1].strip():
        raise UserError(f"{p}: empty file, expected an EmpatheticDialogues CSV header")
    header = [h.strip() for h in header_line[1].split(",")]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{where(p, 1)}: header lacks column(s) {', '.join(missing)} (got {', '.join(header)})")
    col = {c: header.index(c) for c in REQUIRED_COLUMNS}
    width = max(col.values()) + 1
    conv: str | None = None
    rows: list[tuple[int, int, str, str, str, str]] = []
    seen: set[str] = set()
    n = 0
    for lineno, line in it:
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < width:
            raise UserError(f"{where(p, lineno)}: {len(parts)} fields, expected at least {width}")
        cid = parts[col["conv_id"]].strip()
        try:
            idx = int(parts[col["utterance_idx"]])
        except ValueError:
            raise UserError(f"{where(p, lineno, 'utterance_idx')}: not an integer: {parts[col['utterance_idx']]!r}") from None
        text = unescape(parts[col["utterance"]])
        if not cid:
            raise UserError(f"{where(p, lineno, 'conv_id')}: empty")
        if not text:
            raise UserError(f"{where(p, lineno, 'utterance')}: empty")
        row = (lineno, idx, parts[col["context"]].strip(), unescape(parts[col["prompt"]]),
               parts[col["speaker_idx"]].strip(), text)
        if cid != conv:
            if conv is not None:
                yield _dialog(p, conv, rows)
                n += 1
            if cid in seen:
                raise UserError(f"{where(p, lineno, 'conv_id')}: conversation {cid!r} resumes after other rows")
            seen.add(cid)
            conv, rows = cid, []
        rows.append(row)
    if conv is not None:
        yield _dialog(p, conv, rows)
        n += 1
    if n == 0:
        raise UserError(f"{p}: no conversations after the header")


def read_seeds(path: str | Path) -> list[str]:
    """Seed utterances from a ``test_sent.tsv``-style file: one per line, blank lines skipped."""
    p = Path(path)
    seeds = [unescape(line) for _, line in iter_text_lines(p) if line.strip()]
    if not seeds:
        raise UserError(f"{p}: empty file, expected one seed utterance per line")
    return seeds


def seed_dialogs(path: str | Path) -> Iterator[Dialog]:
    """Each seed utterance of a seed file as a one-turn dialog (ids ``seed_1``, ``seed_2``, ... in file order)."""
    p = Path(path)
    for i, text in enumerate(read_seeds(p), 1):
        yield Dialog(id=f"seed_{i}", turns=[Turn(role="user", text=text)], meta={"source": SOURCE, "file": p.name})


def write_seeds(path: str | Path, seeds: Iterable[str]) -> int:
    """Write one seed per line (newlines inside a seed become spaces), atomically; return the count."""
    from sage_dialog.core.io import atomic_write

    n = 0
    with atomic_write(path) as fh:
        for s in seeds:
            fh.write(" ".join(s.split()) + "\n")
            n += 1
    return n
