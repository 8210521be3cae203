"""The annotate stage: label every utterance of every dialog with motivation, emotion and topics.

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings` (a run config's
``annotate:`` section), :class:`Inputs`, :class:`Result` and :func:`run` (:mod:`.stage`);
``sage-dialog annotate`` runs it from an :class:`AnnotateConfig` (the settings plus the input and
output files). The annotator itself is a role (:mod:`sage_dialog.roles.annotator`); reading the input
is :mod:`.dialogs`; running the annotator on Ray workers is :mod:`.remote`.
"""

from sage_dialog.stages.annotate.dialogs import load_dialogs
from sage_dialog.stages.annotate.stage import (
    COUNT_KEYS,
    AnnotateConfig,
    Inputs,
    OutputFiles,
    Result,
    Settings,
    Summary,
    apply_result,
    build_annotator,
    rejects_path,
    run,
    summary_path,
)

__all__ = [
    "COUNT_KEYS",
    "AnnotateConfig",
    "Inputs",
    "OutputFiles",
    "Result",
    "Settings",
    "Summary",
    "apply_result",
    "build_annotator",
    "load_dialogs",
    "rejects_path",
    "run",
    "summary_path",
]
