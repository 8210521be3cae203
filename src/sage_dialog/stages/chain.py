"""Chaining: annotated dialogs to State-Action Chain (SAC) dialogs.

This is what the original SAGE scripts did to annotated ShareGPT files: each human turn's tags are
renamed ``u_*`` and moved in front of the following assistant turn, the assistant's own tags are
renamed ``a_*``, and human turns are left as plain text. In schema terms: on input user turns carry
``state`` and assistant turns ``action``; on output user turns carry nothing and each assistant turn
carries ``state`` (from the preceding user turn) and ``action`` (its own).

Example (Python)::

    from sage_dialog.stages.chain import chain_dialog, chain_file
    sac_dialog = chain_dialog(annotated_dialog)
    chain_file("data1_reannot.json", "data1_chained.json")   # any readable -> any writable format
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, Tags, Turn


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
