"""The ``sage-dialog`` command: a thin dispatcher over one module per command.

Each command lives in ``sage_dialog/commands/<name>.py`` with two functions,
``add_arguments(parser)`` (its options generated from a settings model by
``commands.config_flags``, so every command takes ``--config FILE`` and ``--set KEY=VALUE``) and
``run(args) -> int``, and a module docstring whose first line is the summary shown here. Options
and positionals may come in any order. Only the chosen command's module is imported, so ``sage-dialog --help`` is fast
and never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sage_dialog import __version__
from sage_dialog.core.errors import UserError
from sage_dialog.core.interrupt import report_interrupted, signals_interrupt
from sage_dialog.core.oserrors import disk_full_error, symlink_loop

# name -> (module, one-line summary). Keep in pipeline order; the summary is the top-level help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sage_dialog.commands.demo", "Run the whole SAGE loop offline on the built-in sandbox world"),
    "run": ("sage_dialog.commands.run", "Run the pipeline from one YAML config, skipping unchanged stages"),
    "import": ("sage_dialog.commands.import_corpus", "Import EmpatheticDialogues CSV, ESConv JSON or the chitchat corpus as dialogs"),
    "annotate": ("sage_dialog.commands.annotate", "Label every utterance with motivation, emotion and topics"),
    "agreement": ("sage_dialog.commands.agreement", "Per-field agreement between two annotation runs"),
    "chain": ("sage_dialog.commands.chain", "Turn annotated dialogs into State-Action Chain dialogs"),
    "mix": ("sage_dialog.commands.mix", "Mix and blend datasets from a data spec into trainer-ready files"),
    "convert": ("sage_dialog.commands.convert", "Convert between dialog, transcript and preference formats"),
    "validate": ("sage_dialog.commands.validate", "Check a file against its format and list every problem"),
    "train": ("sage_dialog.commands.train", "Fine-tune with SFT or DPO (TRL + PEFT)"),
    "export": ("sage_dialog.commands.export", "Merge a LoRA adapter into a full model"),
    "search": ("sage_dialog.commands.search", "Self-play dialog tree search with an LLM judge"),
    "trees": ("sage_dialog.commands.trees", "Show search trees and their action branches as text or one HTML page"),
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


# commands that load a model: they take --threads (CPU threads of torch / BLAS)
MODEL_COMMANDS = {"demo", "run", "annotate", "train", "export", "search", "compare", "eval", "chat", "webui",
                  "serve", "steerability"}


# commands that write files: they take --force (write into an existing folder sage-dialog did not make)
WRITING_COMMANDS = {"demo", "run", "import", "annotate", "agreement", "chain", "mix", "convert", "train", "export",
                    "search", "trees", "prefs", "compare", "eval", "steerability"}


def _add_common(parser: argparse.ArgumentParser, name: str) -> None:
    """-q, -v (every command), --threads (commands that load a model) and --force (commands that
    write), unless the command has them."""
    have = parser._option_string_actions
    group = parser.add_argument_group("common options")
    if "-q" not in have and "--quiet" not in have:
        group.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only results and errors")
    if "-v" not in have and "--verbose" not in have:
        group.add_argument("-v", "--verbose", action="store_true",
                           help="also show library logs on screen, and tracebacks of unexpected errors")
    if name in MODEL_COMMANDS and "--threads" not in have:
        group.add_argument("--threads", type=int, metavar="N",
                           help="CPU threads for torch/BLAS (default: OMP_NUM_THREADS, else the cores not "
                                "busy now, at least 1)")
    if name in WRITING_COMMANDS and "--force" not in have:
        group.add_argument("--force", action="store_true",
                           help="write into an existing output folder that sage-dialog did not make (only the "
                                "files this command writes are replaced; inputs are never overwritten)")


def build_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    doc = (module.__doc__ or summary).strip()
    parser = argparse.ArgumentParser(
        prog=f"sage-dialog {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    _add_common(parser, name)
    return parser, module


# commands whose -o names a run folder (or a file whose folder is one) that gets logs/<command>.log;
# `train` opens its own (output_dir may come from the config), `run` logs per stage. Format folders
# (convert, chain, prefs to LLaMA-Factory or transcripts) get none: a log inside would be read as data.
LOGGED_COMMANDS = {"demo", "annotate", "mix", "search", "compare", "eval", "steerability"}


def _log_file(name: str, ns: argparse.Namespace) -> Path | None:
    """``<out_dir>/logs/<command>.log`` for a command of LOGGED_COMMANDS with an output."""
    out = getattr(ns, "out", None) or getattr(ns, "output", None)
    if name not in LOGGED_COMMANDS or not out or not isinstance(out, (str, Path)):
        return None
    p = Path(out)
    # annotate and steerability write a file (whatever its name): its log goes beside it
    folder = p.parent if name in ("annotate", "steerability") or (p.suffix and not p.is_dir()) else p
    return folder / "logs" / f"{name}.log"


def _run(name: str, args: list[str]) -> int:
    from sage_dialog.core import console, threads

    parser, module = build_parser(name)
    ns = parser.parse_intermixed_args(args)  # options in any order: `run CONFIG --until sft k=v --list`
    _note_inputs(name, ns)
    level = console.VERBOSE if getattr(ns, "verbose", False) else console.QUIET if getattr(ns, "quiet", False) \
        else console.NORMAL
    with console.session(level, command_line=["sage-dialog", name, *args]), threads.restored():
        if name in MODEL_COMMANDS and name != "demo":  # the demo applies its own default (1)
            n = getattr(ns, "threads", None)  # absent: a config-generated flag not given
            if n is not None and n < 1:
                raise UserError(f"--threads {n}: must be at least 1")
            threads.apply(n)  # the stage's config may set it again (flag > file > default)
        log = _log_file(name, ns)
        if log is not None:
            console.open_log(log)
        try:
            return int(module.run(ns) or 0)  # type: ignore[attr-defined]
        except (UserError, KeyboardInterrupt, BrokenPipeError):
            if console.log_path() is not None and not console.log_path().exists():  # type: ignore[union-attr]
                console.close_log(keep=False)  # stopped at once: no log folder left behind
            raise
        except OSError as e:
            full = disk_full_error(e, getattr(ns, "out", None) or getattr(ns, "output", None))
            if full is None:
                raise
            # the disk is full: a traceback in a log on the same disk would fail too, and say less
            with contextlib.suppress(OSError):
                console.close_log(keep=False)
            raise full from None
        except Exception as e:
            if level >= console.VERBOSE or console.log_path() is None:
                raise
            logging.getLogger("traceback").exception("%s failed", name)  # to the log file (redacted), not the screen
            path = console.commit_log()
            if _is_configuration_error(e):
                raise  # exit 2 with its one line (main); the traceback is in the log
            from sage_dialog.core.redact import redact

            print(redact(f"error: {name} failed: {type(e).__name__}: {e}\n(details and traceback in {path})"),
                  file=sys.stderr)
            return 1


def _note_inputs(name: str, ns: argparse.Namespace) -> None:
    """Every path an option or the command's YAML config names is an input no output may touch."""
    from sage_dialog.core import outputs

    outputs.reset(name, force=bool(getattr(ns, "force", False)))
    for dest, value in vars(ns).items():
        if dest.startswith("_"):  # the generator's bookkeeping (flag names), not a value given
            continue
        leaf = dest.rsplit(".", 1)[-1]  # a nested setting (config.latent.action_set) counts by its own name
        outputs.note_named(value, key=leaf, source=leaf)
    config = getattr(ns, "config_file", None) or getattr(ns, "config_arg", None)
    if config is not None and Path(config).is_file() and Path(config).suffix.lower() in (".yaml", ".yml", ".json"):
        import contextlib

        from sage_dialog.core.config import read_yaml

        with contextlib.suppress(UserError):  # the command reports a broken file itself
            outputs.note_named(read_yaml(config))


def _is_configuration_error(e: BaseException) -> bool:
    """A failure the user fixes outside the code (a backend's URL/key/server, a path): exit 2, not a crash."""
    from sage_dialog.backends.base import BackendError

    return isinstance(e, BackendError) or (isinstance(e, OSError) and e.filename is not None)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a closed pipe shows up here when the output was small
        return code
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly like Unix tools; stdout is closed
        _silence_stdout()
        return 141


def _main(args: list[str]) -> int:
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
    # SIGTERM cleans up like Ctrl-C; servers and chat keep their own signal handling
    with signals_interrupt(enabled=name not in ("serve", "webui", "chat")) as received:
        return _dispatch(name, args, received)


def _dispatch(name: str, args: list[str], received: list[str]) -> int:
    from sage_dialog.core import outputs

    try:
        return _run(name, args[1:])
    except BrokenPipeError:
        raise
    except UserError as e:
        return _fail(e.problems, e.exit_code)
    except KeyboardInterrupt:
        return report_interrupted(received)
    except OSError as e:
        if e.filename is None:
            return _crash()
        # the file system said no (read-only, name too long, disk full, permission): a path to fix
        return _fail([f"{e.filename}: cannot write or read here: {e.strerror or e}"], 2)
    except Exception as e:
        from sage_dialog.backends.base import BackendError

        loop = symlink_loop(e) if isinstance(e, RuntimeError) else None  # Python 3.11's Path.resolve()
        if loop is not None:
            return _fail([loop], 2)

        if isinstance(e, BackendError):  # failed for good after retries: URL, key or server to fix
            return _fail([f"model backend failed ({e}); finished work is kept, fix the backend and run "
                          "the same command again to resume"], 2)
        return _crash()
    finally:
        outputs.mark_folders()  # output folders it made are its own: the same command may write there again
        outputs.reset()  # the Python API after a command in the same process starts clean


def _fail(problems: Sequence[str], code: int) -> int:
    """Print the error lines, secrets masked (core.redact is the one redaction point), and give ``code``."""
    from sage_dialog.core.redact import redact

    for line in problems:
        print(f"error: {redact(line)}", file=sys.stderr)
    return code


def _crash() -> int:
    """An unexpected failure: the traceback, secrets masked, exit 1."""
    import traceback

    from sage_dialog.core.redact import redact

    sys.stderr.write(redact(traceback.format_exc()))
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


if __name__ == "__main__":
    sys.exit(main())
