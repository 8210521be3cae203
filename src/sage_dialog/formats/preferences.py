"""Preference data in three forms (FORMATS.md section 4), from and to :class:`schema.PreferencePair`.

* ``original`` (old LLaMA-Factory ranking, alpaca style), one JSON array::

      [{"instruction": <last user text>, "input": "", "output": [<chosen>, <rejected>],
        "history": [[<user>, <assistant>], ...]}]

* ``llamafactory`` (current sharegpt ranking), one JSON array of ``{"conversations": [...history
  ending with a human turn], "chosen": {"from": "gpt", "value": ..}, "rejected": {...}}``; written to a
  folder it also gets its ``dataset_info.json`` entry (``"ranking": true``);
* ``trl`` (conversational), JSONL of ``{"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}`` (streamed).

Assistant texts carry their SAC tags (``{u_..} {a_..} reply``); user texts are plain. None of the
three forms has ids: read pairs are named ``<file stem>_<n>`` (n from 1). A system turn at the start
of the history is written as ``system`` (original), a first ``system`` turn (llamafactory) or a system
message (trl).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core import io
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.schema import PreferencePair, Turn
from sage_dialog.formats import _common, llamafactory
from sage_dialog.formats._common import (
    content_to_turn,
    role_order_problem,
    tags_problem,
    turn_content,
    type_name,
)
from sage_dialog.formats.sharegpt import FROM_TO_ROLE, ROLE_TO_FROM
from sage_dialog.formats.trl import messages_problems

PrefFormat = Literal["original", "llamafactory", "trl"]
RANKING_NAME = "comparison_data"
RANKING_FILE = "comparison_data.json"


def _content(t: Turn) -> str:
    return turn_content(t, "chained")


def _user(text: str) -> Turn:
    return Turn(role="user", text=text)


def _assistant(text: str) -> Turn:
    return content_to_turn("assistant", text)


def pair_problems(path: object, record: object, p: PreferencePair) -> list[str]:
    """Semantic checks: history alternates from a user start and ends with a user turn; both answers assistant."""
    out = []
    if not p.history:
        out.append(f"{where(path, record, 'history')}: empty (a pair answers at least one user turn)")
    else:
        if bad := role_order_problem([t.role for t in p.history]):
            out.append(f"{where(path, record, f'history[{bad[0]}].role')}: {bad[1]}")
        elif p.history[-1].role != "user":
            out.append(f"{where(path, record, 'history')}: must end with a user turn")
    for name in ("chosen", "rejected"):
        if getattr(p, name).role != "assistant":
            out.append(f"{where(path, record, name + '.role')}: expected assistant")
    return out


# ---------------------------------------------------------------------------------------------
# original (alpaca)


def pair_to_original(p: PreferencePair) -> dict[str, Any]:
    """One pair in the original alpaca-style ranking form."""
    hist = list(p.history)
    rec: dict[str, Any] = {}
    system = hist.pop(0).text if hist and hist[0].role == "system" else None
    last = hist.pop() if hist else _user("")
    rec["instruction"] = last.text
    rec["input"] = ""
    rec["output"] = [_content(p.chosen), _content(p.rejected)]
    rec["history"] = [[hist[i].text, _content(hist[i + 1])] for i in range(0, len(hist) - 1, 2)]
    if system is not None:
        rec["system"] = system
    return rec


def original_problems(path: object, i: int, obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where(path, i)}: expected an object, got {type_name(obj)}"]
    out = []
    for k in ("instruction", "input", "output", "history"):
        if k not in obj and k != "input":
            out.append(f"{where(path, i, k)}: missing")
    for k in obj:
        if k not in ("instruction", "input", "output", "history", "system"):
            out.append(f"{where(path, i, k)}: unexpected key")
    for k in ("instruction", "input", "system"):
        if k in obj and not isinstance(obj[k], str):
            out.append(f"{where(path, i, k)}: expected a string, got {type_name(obj[k])}")
    outp = obj.get("output")
    if "output" in obj and not (isinstance(outp, list) and len(outp) == 2 and all(isinstance(x, str) for x in outp)):
        out.append(f"{where(path, i, 'output')}: expected [chosen, rejected] (two strings)")
    elif isinstance(outp, list):
        out.extend(f"{where(path, i, f'output[{j}]')}: {tp}" for j, x in enumerate(outp) if (tp := tags_problem(x)))
    hist = obj.get("history")
    if "history" in obj:
        if not isinstance(hist, list):
            out.append(f"{where(path, i, 'history')}: expected an array of [user, assistant] pairs")
        else:
            for j, h in enumerate(hist):
                if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)):
                    out.append(f"{where(path, i, f'history[{j}]')}: expected [user, assistant] (two strings)")
                elif tp := tags_problem(h[1]):
                    out.append(f"{where(path, i, f'history[{j}][1]')}: {tp}")
    return out


def original_to_pair(obj: dict[str, Any], pair_id: str) -> PreferencePair:
    """A well-formed original record as a pair (a non-empty ``input`` is appended to the instruction)."""
    hist: list[Turn] = []
    if "system" in obj:
        hist.append(Turn(role="system", text=obj["system"]))
    for u, a in obj.get("history", []):
        hist += [_user(u), _assistant(a)]
    instr = obj["instruction"] + ("\n" + obj["input"] if obj.get("input") else "")
    hist.append(_user(instr))
    chosen, rejected = obj["output"]
    return PreferencePair(id=pair_id, history=hist, chosen=_assistant(chosen), rejected=_assistant(rejected))


# ---------------------------------------------------------------------------------------------
# LLaMA-Factory sharegpt ranking


def pair_to_llamafactory(p: PreferencePair) -> dict[str, Any]:
    return {
        "conversations": [{"from": ROLE_TO_FROM[t.role], "value": _content(t)} for t in p.history],
        "chosen": {"from": "gpt", "value": _content(p.chosen)},
        "rejected": {"from": "gpt", "value": _content(p.rejected)},
    }


def _sharegpt_turn_problems(path: object, i: int, field: str, t: Any, want: str | None = None) -> list[str]:
    if not isinstance(t, dict):
        return [f"{where(path, i, field)}: expected a turn object, got {type_name(t)}"]
    out = [f"{where(path, i, field)}: unexpected key {k!r} (a turn has only from and value)"
           for k in t if k not in ("from", "value")]
    frm = t.get("from")
    if "from" not in t:
        out.append(f"{where(path, i, field + '.from')}: missing")
    elif frm not in FROM_TO_ROLE or (want is not None and frm != want):
        out.append(f"{where(path, i, field + '.from')}: unexpected speaker {frm!r}" + (f" (expected {want})" if want else ""))
    if "value" not in t:
        out.append(f"{where(path, i, field + '.value')}: missing")
    elif not isinstance(t["value"], str):
        out.append(f"{where(path, i, field + '.value')}: expected a string, got {type_name(t['value'])}")
    elif tp := tags_problem(t["value"]):
        out.append(f"{where(path, i, field + '.value')}: {tp}")
    return out


def llamafactory_problems(path: object, i: int, obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where(path, i)}: expected an object, got {type_name(obj)}"]
    out = []
    for k in ("conversations", "chosen", "rejected"):
        if k not in obj:
            out.append(f"{where(path, i, k)}: missing")
    out += [f"{where(path, i, k)}: unexpected key" for k in obj if k not in ("conversations", "chosen", "rejected")]
    conv = obj.get("conversations")
    if "conversations" in obj:
        if not isinstance(conv, list) or not conv:
            out.append(f"{where(path, i, 'conversations')}: expected a non-empty array of turns")
        else:
            for j, t in enumerate(conv):
                out += _sharegpt_turn_problems(path, i, f"conversations[{j}]", t)
            roles = [FROM_TO_ROLE.get(str(t.get("from")), "?") if isinstance(t, dict) else "?" for t in conv]
            if "?" not in roles:
                if bad := role_order_problem(roles, {"user": "human", "assistant": "gpt", "system": "system"}):
                    out.append(f"{where(path, i, f'conversations[{bad[0]}].from')}: {bad[1]}")
                elif roles[-1] != "user":
                    out.append(f"{where(path, i, 'conversations')}: must end with a human turn")
    for k in ("chosen", "rejected"):
        if k in obj:
            out += _sharegpt_turn_problems(path, i, k, obj[k], want="gpt")
    return out


def llamafactory_to_pair(obj: dict[str, Any], pair_id: str) -> PreferencePair:
    hist = [content_to_turn(FROM_TO_ROLE[t["from"]], t["value"]) for t in obj["conversations"]]
    return PreferencePair(id=pair_id, history=hist, chosen=_assistant(obj["chosen"]["value"]),
                          rejected=_assistant(obj["rejected"]["value"]))


# ---------------------------------------------------------------------------------------------
# TRL


def pair_to_trl(p: PreferencePair) -> dict[str, Any]:
    return {
        "prompt": [{"role": t.role, "content": _content(t)} for t in p.history],
        "chosen": [{"role": "assistant", "content": _content(p.chosen)}],
        "rejected": [{"role": "assistant", "content": _content(p.rejected)}],
    }


def trl_problems(path: object, i: int, obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where(path, i)}: expected an object, got {type_name(obj)}"]
    out = []
    for k in ("prompt", "chosen", "rejected"):
        if k not in obj:
            out.append(f"{where(path, i, k)}: missing")
    out += [f"{where(path, i, k)}: unexpected key" for k in obj if k not in ("prompt", "chosen", "rejected")]
    if "prompt" in obj:
        probs = messages_problems(path, i, obj["prompt"], "prompt")
        out += probs
        pr = obj["prompt"]
        if not probs and pr[-1].get("role") != "user":
            out.append(f"{where(path, i, 'prompt')}: must end with a user message")
    for k in ("chosen", "rejected"):
        v = obj.get(k)
        if k not in obj:
            continue
        if not (isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict)):
            out.append(f"{where(path, i, k)}: expected one assistant message in an array")
            continue
        if v[0].get("role") != "assistant":
            out.append(f"{where(path, i, k + '[0].role')}: expected assistant")
        c = v[0].get("content")
        if not isinstance(c, str):
            out.append(f"{where(path, i, k + '[0].content')}: expected a string, got {type_name(c)}")
        elif tp := tags_problem(c):
            out.append(f"{where(path, i, k + '[0].content')}: {tp}")
    return out


def trl_to_pair(obj: dict[str, Any], pair_id: str) -> PreferencePair:
    hist = [content_to_turn(m["role"], m["content"]) for m in obj["prompt"]]
    return PreferencePair(id=pair_id, history=hist, chosen=_assistant(obj["chosen"][0]["content"]),
                          rejected=_assistant(obj["rejected"][0]["content"]))


# ---------------------------------------------------------------------------------------------
# files

_TO = {"original": pair_to_original, "llamafactory": pair_to_llamafactory, "trl": pair_to_trl}
_FROM = {"original": original_to_pair, "llamafactory": llamafactory_to_pair, "trl": trl_to_pair}
_PROBLEMS = {"original": original_problems, "llamafactory": llamafactory_problems, "trl": trl_problems}


def _array_path(path: Path, fmt: PrefFormat) -> Path:
    if fmt == "llamafactory" and path.is_dir():
        _, entry = llamafactory.find_entry(path, ranking=True)
        return path / entry["file_name"]
    return path


def _load_array(path: Path) -> list[Any]:
    data = io.read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array of preference records, got {type_name(data)}")
    if not data:
        raise UserError(f"{path}: empty array, expected preference records")
    return data


def check_preferences(path: str | Path, fmt: PrefFormat) -> tuple[list[str], int]:
    """Every problem of a preference file (a LLaMA-Factory folder is accepted) and its record count."""
    p = _array_path(Path(path), fmt)
    check = _PROBLEMS[fmt]
    problems: list[str] = []
    if fmt == "trl":
        n = 0
        for lineno, obj in _common.iter_jsonl_lines(p, problems):
            problems.extend(check(p, lineno, obj))
            n += 1
        return problems, n
    data = _load_array(p)
    for i, obj in enumerate(data, start=1):
        problems.extend(check(p, i, obj))
    return problems, len(data)


def read_preferences(path: str | Path, fmt: PrefFormat) -> Iterator[PreferencePair]:
    """Pairs of a preference file (trl: streamed; the others are whole JSON documents)."""
    p = _array_path(Path(path), fmt)
    stem, check, conv = p.stem, _PROBLEMS[fmt], _FROM[fmt]
    if fmt == "trl":
        def one(obj: Any, lineno: int) -> PreferencePair:
            if probs := check(p, lineno, obj):
                raise UserError(probs)
            return conv(obj, f"{stem}_{lineno}")

        return _common.stream_jsonl(p, one)
    data = _load_array(p)
    problems = [line for i, obj in enumerate(data, start=1) for line in check(p, i, obj)]
    if problems:
        raise UserError(problems)
    return iter([conv(obj, f"{stem}_{i}") for i, obj in enumerate(data, start=1)])


def write_preferences(path: str | Path, pairs: Iterable[PreferencePair], fmt: PrefFormat, *,
                      name: str = RANKING_NAME) -> int:
    """Write pairs in ``fmt``; return how many. For ``llamafactory``, a path without ``.json`` is a
    folder that gets ``comparison_data.json`` and its ``dataset_info.json`` entry ``name``."""
    p = Path(path)
    to = _TO[fmt]
    if fmt == "trl":
        return io.write_jsonl(p, (to(x) for x in pairs))
    records = [to(x) for x in pairs]
    target = p
    if fmt == "llamafactory" and p.suffix.lower() != ".json":
        target = p / RANKING_FILE
    with io.atomic_write(target) as fh:
        import json

        fh.write(json.dumps(records, ensure_ascii=False, indent=4) + "\n")
    if target is not p:
        llamafactory.update_dataset_info(p, name, llamafactory.ranking_dataset_info(RANKING_FILE))
    return len(records)
