"""The ``sage-dialog`` command: a thin dispatcher over one module per command.

Each command lives in ``sage_dialog/commands/<name>.py`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``, and a module docstring whose first line is the
summary shown here. Only the chosen command's module is imported, so ``sage-dialog --help`` is fast
and never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sage_dialog import __version__
from sage_dialog.core.errors import UserError

# name -> (module, one-line summary). Keep in pipeline order; the summary is the top-level help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sage_dialog.commands.demo", "Run the whole SAGE loop offline on the built-in sandbox world"),
    "run": ("sage_dialog.commands.run", "Run the pipeline from one YAML config, skipping unchanged stages"),
    "import": ("sage_dialog.commands.import_corpus", "Import EmpatheticDialogues CSV or ESConv JSON as dialogs"),
    "annotate": ("sage_dialog.commands.annotate", "Label every utterance with motivation, emotion and topics"),
    "agreement": ("sage_dialog.commands.agreement", "Per-field agreement between two annotation runs"),
    "chain": ("sage_dialog.commands.chain", "Turn annotated dialogs into State-Action Chain dialogs"),
    "mix": ("sage_dialog.commands.mix", "Mix and blend datasets from a data spec into trainer-ready files"),
    "convert": ("sage_dialog.commands.convert", "Convert between dialog, transcript and preference formats"),
    "validate": ("sage_dialog.commands.validate", "Check a file against its format and list every problem"),
    "train": ("sage_dialog.commands.train", "Fine-tune with SFT or DPO (TRL + PEFT)"),
    "export": ("sage_dialog.commands.export", "Merge a LoRA adapter into a full model"),
    "search": ("sage_dialog.commands.search", "Self-play dialog tree search with an LLM judge"),
    "prefs": ("sage_dialog.commands.prefs", "Build preference pairs and best paths from search trees"),
    "compare": ("sage_dialog.commands.compare", "Judge models pairwise on whole dialogs, with statistics"),
    "eval": ("sage_dialog.commands.eval", "General-ability benchmarks through lm-evaluation-harness"),
    "chat": ("sage_dialog.commands.chat", "Chat in the terminal with the latent visible and steerable"),
    "webui": ("sage_dialog.commands.webui", "Chat in the browser with the latent in a side panel"),
    "serve": ("sage_dialog.commands.serve", "OpenAI-compatible server in front of a SAC model"),
    "steerability": ("sage_dialog.commands.steerability", "Measure how often forced actions are followed"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module is present (all of them in a full install)."""
    from importlib.util import find_spec

    return {k: v for k, v in COMMANDS.items() if find_spec(v[0]) is not None}


def _top_help() -> str:
    cmds = _available()
    width = max(len(k) for k in cmds) if cmds else 8
    lines = [
        f"sage-dialog {__version__}: steerable, self-improving dialog models (State-Action Chains).",
        "",
        "usage: sage-dialog COMMAND [options]      (sage-dialog COMMAND --help for one command)",
        "",
        "commands:",
        *(f"  {k.ljust(width)}  {v[1]}" for k, v in cmds.items()),
        "",
        "example:  sage-dialog demo -o demo-out",
    ]
    return "\n".join(lines)


def build_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    doc = (module.__doc__ or summary).strip()
    parser = argparse.ArgumentParser(
        prog=f"sage-dialog {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_top_help())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"sage-dialog {__version__}")
        return 0
    name = args[0]
    if name not in _available():
        print(f"sage-dialog: unknown command {name!r}\n\n{_top_help()}", file=sys.stderr)
        return 2
    from sage_dialog.core.interrupt import report_interrupted, signals_interrupt

    with signals_interrupt() as received:  # SIGTERM cleans up like Ctrl-C
        try:
            parser, module = build_parser(name)
            ns = parser.parse_args(args[1:])
            return int(module.run(ns) or 0)  # type: ignore[attr-defined]
        except UserError as e:
            for line in e.problems:
                print(f"error: {line}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            return report_interrupted(received)


if __name__ == "__main__":
    sys.exit(main())
