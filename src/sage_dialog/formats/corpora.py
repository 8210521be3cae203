"""Public corpora as dialogs: ``sage-dialog import`` and the loop's ``import`` stage.

EmpatheticDialogues (CSV, or the original seed ``.tsv``/``.txt``), ESConv (JSON) and the chitchat
corpus are written as Dialog JSONL, their first user utterances optionally as a seed file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import check_paths
from sage_dialog.core.schema import Dialog


@dataclass
class Imported:
    """What an import wrote: dialogs and seeds, and the dialogs skipped as too short (turns -> count)."""

    dialogs: int
    seeds: int
    skipped: dict[int, int] = field(default_factory=dict)
    min_turns: int = 1

    def skipped_line(self) -> str | None:
        """The skipped dialogs as one line (None when none was skipped)."""
        if not self.skipped:
            return None
        return (f"skipped {sum(self.skipped.values())} dialogs with fewer than {self.min_turns} turns "
                f"({', '.join(f'{v} with {k}' for k, v in self.skipped.items())})")


def import_corpus(corpus: Literal["empathetic", "esconv", "chitchat"], path: str | Path | None, output: str | Path, *,
                  seeds_out: str | Path | None = None, limit: int | None = None,
                  min_turns: int = 1, max_turns: int | None = None,
                  label_map: str | Path | None = None, keep_unknown: bool = False) -> Imported:
    """Write a public corpus as Dialog JSONL (and its first user utterances as seeds); return counts.

    Dialogs with fewer than ``min_turns`` turns are skipped (counted in :attr:`Imported.skipped`);
    longer than ``max_turns``, they are cut to their first ``max_turns`` turns (a small annotator
    labels short dialogs much better);
    ``limit`` counts the dialogs written. ``path`` None means the installed chitchat-dataset's file.
    ESConv only: ``label_map`` (a JSON/YAML file ``{spelling: label}``) maps strategy spellings,
    ``keep_unknown`` keeps strategies that are in no set as written.
    """
    from sage_dialog.core.io import write_jsonl
    from sage_dialog.formats.empathetic import write_seeds

    if min_turns < 1:
        raise UserError(f"--min-turns must be at least 1, got {min_turns}")
    if max_turns is not None and max_turns < min_turns:
        raise UserError(f"--max-turns must be at least --min-turns ({min_turns}), got {max_turns}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if corpus != "esconv" and (label_map or keep_unknown):
        raise UserError("--label-map and --keep-unknown apply to esconv imports only")
    if path is None and corpus != "chitchat":
        raise UserError(f"import {corpus}: give the corpus FILE")

    def source() -> Iterable[Dialog]:
        if corpus == "chitchat":
            from sage_dialog.formats.chitchat import default_path, read_chitchat

            return read_chitchat(default_path() if path is None else path)
        p = Path(path)  # type: ignore[arg-type]
        if corpus == "esconv":
            from sage_dialog.formats.esconv import read_esconv, read_label_map

            return read_esconv(p, label_map=read_label_map(label_map) if label_map else None,
                               keep_unknown=keep_unknown)
        if p.suffix.lower() in (".tsv", ".txt"):  # the original test_sent.tsv: one utterance per line
            from sage_dialog.formats.empathetic import seed_dialogs

            return seed_dialogs(p)
        from sage_dialog.formats import read_records

        return read_records(p, "empathetic")

    check_paths(inputs=[Path(path) if path is not None else None, label_map], files=[output, seeds_out])
    firsts: list[str] = []
    skipped = Counter[int]()

    def stream() -> Iterator[Dialog]:
        for d in source():
            if len(d.turns) < min_turns:
                skipped[len(d.turns)] += 1
                continue
            if max_turns is not None and len(d.turns) > max_turns:
                d = d.model_copy(update={"turns": d.turns[:max_turns]})
            firsts.append(d.turns[0].text)
            yield d
            if limit is not None and len(firsts) >= limit:
                return

    n = write_jsonl(output, stream())
    seeds = write_seeds(seeds_out, firsts) if seeds_out else 0
    return Imported(dialogs=n, seeds=seeds, skipped=dict(sorted(skipped.items())), min_turns=min_turns)
