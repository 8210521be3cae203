"""Chaining: annotated dialogs to State-Action Chain (SAC) dialogs.

This is what the original SAGE scripts did to annotated ShareGPT files: each human turn's tags are
renamed ``u_*`` and moved in front of the following assistant turn, the assistant's own tags are
renamed ``a_*``, and human turns are left as plain text. In schema terms: on input user turns carry
``state`` and assistant turns ``action``; on output user turns carry nothing and each assistant turn
carries ``state`` (from the preceding user turn) and ``action`` (its own).

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings` (the formats),
:class:`Inputs` (output file name -> annotated file), :class:`Result` and :func:`run`.

Example (Python)::

    from sage_dialog.stages import chain
    sac_dialog = chain.chain_dialog(annotated_dialog)
    res = chain.run(chain.Settings(), inputs=chain.Inputs(files={"data1_chained.json": Path("data1_reannot.json")}),
                    out=Path("."))   # any readable -> any writable format; res.counts["dialogs"]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.stages.base import StageResult, StageSettings


class Settings(StageSettings):
    """The ``chain`` stage: only the file formats (detected from the names unless given)."""

    src_format: str | None = Field(None, description="input format (default: detected)")
    dst_format: str | None = Field(None, description="output format (default: from the name)")


@dataclass
class Inputs:
    """What the stage reads: output file name (in ``out``) -> the annotated dialog file chained into it."""

    files: dict[str, Path]


class Result(StageResult):
    """Outputs: one per input file, by its output name. Counts: ``files``, ``dialogs``. ``warnings``:
    files with dialogs that carry no tags, or no user tags (the caller shows them)."""


def chain_dialog(d: Dialog) -> Dialog:
    """The SAC version of an annotated dialog (see the module docstring).

    A trailing user turn keeps its text and loses its tags (nothing follows to carry them). An
    assistant turn whose preceding user turn has no tags keeps the state it may already have, so
    chaining an already chained dialog changes nothing. A dialog tagged only in part (an ESConv
    import: assistant strategies, no user tags) still becomes SAC: every assistant turn gets both
    blocks, with null fields where no tag exists. A dialog with no tag at all stays as it is.
    """
    tagged = any(t.state is not None or t.action is not None for t in d.turns if t.role != "system")
    turns: list[Turn] = []
    pending = None
    for t in d.turns:
        if t.role == "user":
            pending = t.state
            turns.append(t.model_copy(update={"state": None, "action": None}))
        elif t.role == "assistant":
            state = pending if pending is not None else t.state
            action = t.action
            if tagged:
                state = state if state is not None else Tags()
                action = action if action is not None else Tags()
            turns.append(t.model_copy(update={"state": state, "action": action}))
            pending = None
        else:
            turns.append(t.model_copy())
    return d.model_copy(update={"turns": turns, "meta": dict(d.meta)})


def chain_file(src: str | Path, dst: str | Path, *, src_format: str | None = None,
               dst_format: str | None = None, progress: bool = False,
               warn: Callable[[str], None] | None = None) -> int:
    """Chain every dialog of ``src`` into ``dst`` (formats detected from the names unless given).

    When both files are ShareGPT JSON the output is a chained ShareGPT file, exactly as the original
    scripts wrote it. Returns the number of dialogs written; nothing is written on bad input.
    ``warn`` hears about dialogs without any tags (they stay plain) and about dialogs without user
    tags (their state blocks are null).
    """
    from sage_dialog.formats import convert_file, detect_format, get_format
    from sage_dialog.formats.sharegpt import check_sharegpt

    fin = get_format(src_format or detect_format(src))
    if fin.kind != "dialog":
        raise UserError(f"{src}: format {fin.name} holds no dialogs to chain")
    if fin.name.startswith("sharegpt"):
        # an annotated file must tag every turn; a half-annotated one would chain into wrong states
        problems, _ = check_sharegpt(src, style="annotated")
        if problems:
            raise UserError(problems)
    if dst_format is None and Path(dst).suffix.lower() == ".json":
        dst_format = "sharegpt-chained"
    untagged: list[str] = []
    no_state: list[str] = []

    def transform(d: Dialog) -> Dialog:
        if not any(t.state is not None or t.action is not None for t in d.turns):
            untagged.append(d.id)
        elif not any(t.role == "user" and t.state is not None for t in d.turns) and \
                not any(t.role == "assistant" and t.state is not None for t in d.turns):
            no_state.append(d.id)
        return chain_dialog(d)

    n = convert_file(src, dst, src_format=fin.name, dst_format=dst_format, transform=transform, progress=progress)

    def shown(ids: list[str]) -> str:
        return ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")

    if untagged and warn is not None:
        warn(f"{src}: {len(untagged)} of {n} dialogs carry no tags and stay plain ({shown(untagged)}); "
             "is the input annotated?")
    if no_state and warn is not None:
        warn(f"{src}: {len(no_state)} of {n} dialogs have no user tags ({shown(no_state)}); their state "
             "blocks are null (annotate them for states)")
    return n


def run(settings: Settings, *, inputs: Inputs, out: Path, progress: bool = False) -> Result:
    """Chain every file of ``inputs`` into ``out/<its name>`` (each checked and written by
    :func:`chain_file`: nothing is written for a bad input)."""
    t0 = time.perf_counter()
    warnings: list[str] = []
    outputs: dict[str, Path] = {}
    dialogs = 0
    for name, src in inputs.files.items():
        dst = out / name
        dialogs += chain_file(src, dst, src_format=settings.src_format, dst_format=settings.dst_format,
                              progress=progress, warn=warnings.append)
        outputs[name] = dst
    return Result(outputs=outputs, counts={"files": len(outputs), "dialogs": dialogs}, warnings=warnings,
                  seconds=time.perf_counter() - t0)
