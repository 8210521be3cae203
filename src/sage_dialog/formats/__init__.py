"""Every file format sage-dialog reads and writes, by name, with detection and conversion.

Formats carry one *kind* of record: ``dialog`` (:class:`schema.Dialog`), ``pair``
(:class:`schema.PreferencePair`) or ``other`` (files that are only read and checked, e.g. judgement
files and data specs). :func:`convert_file` goes from any readable format to any writable one of the
same kind; :func:`check_file` lists every problem of a file (``sage-dialog validate``).
The registry is :mod:`.registry`, detection :mod:`.detect`, reading, checking and conversion
:mod:`.convert`, and each format family has its own module (:mod:`.sharegpt`, :mod:`.trl`, ...);
this package gathers their public names.

Names (``sage-dialog convert --help`` prints this table)::

    dialogs               JSONL of schema.Dialog (our canonical format)            .jsonl
    sharegpt              original SAGE JSON array, style detected / auto           .json
    sharegpt-raw | sharegpt-annotated | sharegpt-chained   ... with a fixed style   .json
    trl-sft               TRL {"messages": [...]} JSONL                            .jsonl
    llamafactory-sft      folder: mix.json + dataset_info.json                     folder
    transcripts           folder of self-play .txt transcripts (🧑‍💻 / 🤖 lines)       folder
    transcripts-full      the full/ variant (🤖✅ kept, TAB 🤖❌ dropped)             folder
    transcripts-converted tags removed, user / assistant prefixes                  folder
    pairs                 JSONL of schema.PreferencePair                           .jsonl
    prefs-original        alpaca-style ranking of the original scripts             .json
    prefs-llamafactory    sharegpt ranking file (+ dataset_info.json when a folder) .json / folder
    prefs-trl             TRL conversational preference JSONL                      .jsonl
    data-spec             data_spec.json of the mixing step (check only)            .json
    judge-input | judge-output   judgement files of the original (check only)      .json
    combined-tsv | consensus-tsv judgement tables (check only)                     .tsv
    empathetic            EmpatheticDialogues CSV (read only)                      .csv
    esconv                ESConv JSON (read only)                                  .json
"""

from __future__ import annotations

from sage_dialog.formats.convert import check_file, convert_file, read_records
from sage_dialog.formats.detect import detect_format
from sage_dialog.formats.registry import FORMATS, Format, format_table, get_format, register

__all__ = ["FORMATS", "Format", "check_file", "convert_file", "detect_format", "format_table", "get_format",
           "read_records", "register"]
