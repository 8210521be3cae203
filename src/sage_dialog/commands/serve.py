"""OpenAI-compatible server in front of a SAC model.

Clients send ordinary chat messages and get ordinary replies: the model's tag blocks are removed from
the text and returned in choices[i].message.sage = {"state": .., "action": ..}. Steer a reply with
the extra request field "sage_steer": {"a_emotion": "playful"}. Streaming (SSE) is supported. Binds
127.0.0.1 unless --host says otherwise. With a token (env SAGE_DIALOG_SERVE_TOKEN, or --token),
requests without "Authorization: Bearer TOKEN" get 401.

Example:
  SAGE_DIALOG_SERVE_TOKEN=s3cret sage-dialog serve --model hf:runs/sft/merged --port 8000
  # then, from Python:
  #   from openai import OpenAI
  #   c = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="s3cret")
  #   r = c.chat.completions.create(model="hf:runs/sft/merged",
  #         messages=[{"role": "user", "content": "I failed my exam"}],
  #         extra_body={"sage_steer": {"a_emotion": "playful"}})
  #   print(r.choices[0].message.content, r.choices[0].message.sage)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Literal

from pydantic import Field

from sage_dialog.commands.model_flags import ModelSettings


class LIMIT_DEFAULTS:  # a namespace: ServeLimits' defaults, without importing FastAPI here
    max_request_bytes = 1_048_576
    max_prompt_tokens = 4096
    max_completion_tokens = 4096
    request_timeout_s = 300.0
    header_timeout_s = 10.0
    shutdown_timeout_s = 5.0


class ServeSettings(ModelSettings):
    """Settings of ``sage-dialog serve``: the model, where to listen, and limits on one request."""

    host: str = Field("127.0.0.1", description="address to bind (default 127.0.0.1, loopback only)")
    port: int = Field(8000, description="port to listen on")
    served_name: str | None = Field(None, description="model id listed by /v1/models (default: the --model spec)")
    token: str | None = Field(None, description="bearer token clients must send (prefer the env var "
                              "SAGE_DIALOG_SERVE_TOKEN: a command-line value is visible to other users in the "
                              "process list)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="server log level")
    # limits on one request (hostile or careless clients)
    max_request_bytes: int = Field(LIMIT_DEFAULTS.max_request_bytes,
                                   description="largest request body; larger ones get 413")
    max_prompt_tokens: int = Field(LIMIT_DEFAULTS.max_prompt_tokens, description="longest prompt in tokens, chat "
                                   "template included; longer ones get 400")
    max_completion_tokens: int = Field(LIMIT_DEFAULTS.max_completion_tokens,
                                       description="largest max_tokens a request may ask for; more gets 400")
    request_timeout: float = Field(LIMIT_DEFAULTS.request_timeout_s, description="seconds one request may run, "
                                   "its body's upload included, before it is stopped (408 while the body arrives, "
                                   "504 while generating)")
    header_timeout: float = Field(LIMIT_DEFAULTS.header_timeout_s, description="seconds a connection may take to "
                                  "send a request's headers before it is closed (slow clients)")
    shutdown_timeout: float = Field(LIMIT_DEFAULTS.shutdown_timeout_s, description="seconds requests still running "
                                    "get after SIGTERM/Ctrl-C before they are cancelled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.model_flags import add_model_arguments

    add_model_arguments(parser, ServeSettings)


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.model_flags import backend_from_args, model_settings, sampling_from_args
    from sage_dialog.core.errors import UserError
    from sage_dialog.interact.serve import TOKEN_ENV, create_app, serve
    from sage_dialog.interact.serve_limits import ServeLimits

    args = model_settings(ServeSettings, args)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    for flag in (
        "max_request_bytes",
        "max_prompt_tokens",
        "max_completion_tokens",
        "request_timeout",
        "header_timeout",
        "shutdown_timeout",
    ):
        if not getattr(args, flag) > 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    limits = ServeLimits(
        max_request_bytes=args.max_request_bytes,
        max_prompt_tokens=args.max_prompt_tokens,
        max_completion_tokens=args.max_completion_tokens,
        request_timeout_s=args.request_timeout,
        header_timeout_s=args.header_timeout,
        shutdown_timeout_s=args.shutdown_timeout,
    )
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(
            f"warning: serving on {args.host} without a token: anyone who can reach it can use it",
            file=sys.stderr,
        )
    sampling = sampling_from_args(args)
    backend = backend_from_args(args)
    app = create_app(
        backend,
        model_name=args.served_name or args.model,
        token=token,
        sampling=sampling,
        system_prompt=args.system,
        limits=limits,
    )
    print(
        f"serving {args.served_name or args.model} on http://{args.host}:{args.port}/v1"
        f" ({'token required' if token else 'no token'})",
        file=sys.stderr,
        flush=True,
    )
    serve(app, host=args.host, port=args.port, log_level=args.log_level, limits=limits)
    return 0
