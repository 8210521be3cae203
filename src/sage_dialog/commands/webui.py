"""Chat in the browser with the latent in a side panel.

The side panel has a box per steerable field (u_* = state, a_* = action): fill some to force them
on the next generation, leave them empty to let the model choose. The panel shows the state the
model read and the action it chose. "Regenerate" samples another reply; "Keep this one" appends the
reply on screen as chosen and the other candidates as rejected to the preferences file
(schema.PreferencePair JSONL, ready for the DPO stage (`sage-dialog train`)). Runs offline, binds 127.0.0.1.

Example:
  sage-dialog webui --model hf:runs/sft/merged --prefs runs/webui-prefs.jsonl --port 7860
  # then open http://127.0.0.1:7860
"""

from __future__ import annotations

import argparse

from pydantic import Field

from sage_dialog.commands.model_flags import ModelSettings


class WebUISettings(ModelSettings):
    """Settings of ``sage-dialog webui``."""

    prefs: str = Field("webui-prefs.jsonl", description="preference pairs file (appended to)")
    host: str = Field("127.0.0.1", description="address to bind (default loopback only)")
    port: int = Field(7860, description="port to listen on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.model_flags import add_model_arguments

    add_model_arguments(parser, WebUISettings)


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from pathlib import Path

    from sage_dialog.commands.model_flags import backend_from_args, model_settings, sampling_from_args
    from sage_dialog.core.errors import UserError

    args = model_settings(WebUISettings, args)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    prefs = Path(args.prefs)
    if prefs.is_dir():
        raise UserError(f"--prefs {prefs}: is a directory, expected a file")
    try:
        from sage_dialog.interact.webui import WebApp, launch
    except ImportError as e:
        raise UserError(f"the web UI needs gradio ({e.name} missing): pip install 'sage-dialog[webui]'") from None
    sampling = sampling_from_args(args)
    backend = backend_from_args(args)
    app = WebApp(backend, prefs, system_prompt=args.system, sampling=sampling)
    print(f"web UI on http://{args.host}:{args.port} (preferences -> {prefs})", flush=True)
    launch(app, host=args.host, port=args.port, block=True)
    return 0
