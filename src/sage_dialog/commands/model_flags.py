"""The model a talking command loads and how it samples: settings shared by chat, webui, serve and
steerability, turned into flags by the one generator (``commands.config_flags``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core.errors import UserError
from sage_dialog.roles.sampling import CHAT_SAMPLING

if TYPE_CHECKING:
    from sage_dialog.backends.base import Backend, SamplingParams


class ModelSettings(BaseModel):
    """``--model SPEC``, ``--adapter DIR``, ``--system`` and the sampling options."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="backend spec, e.g. hf:out/sft or openai:NAME")
    adapter: str | None = Field(None, description="LoRA adapter folder to load on top of an hf: model")
    system: str | None = Field(None, description="system prompt")
    temperature: float = Field(CHAT_SAMPLING.temperature, description="sampling temperature (0 = greedy)")
    top_p: float = Field(CHAT_SAMPLING.top_p, description="nucleus sampling: keep the smallest set of tokens "
                         "with this mass")
    max_tokens: int = Field(CHAT_SAMPLING.max_tokens, description="most new tokens per reply")
    seed: int | None = Field(None, description="sampling seed (reproducible replies)")


MODEL_FLAGS = {"model": ["--model", "-m"]}  # today's names of ModelSettings' flags, where not generated


def add_model_arguments(parser: argparse.ArgumentParser, settings: type[ModelSettings] = ModelSettings,
                        **kw: Any) -> None:
    """Flags, ``--config`` and ``--set`` of ``settings`` (ModelSettings or a command's subclass of it)."""
    from sage_dialog.commands.config_flags import add_config_flags

    extra = {"model": {"metavar": "SPEC"}, "adapter": {"metavar": "DIR"}, **kw.pop("extra", {})}
    add_config_flags(parser, settings, flags={**MODEL_FLAGS, **kw.pop("flags", {})}, extra=extra, **kw)


def model_settings(settings: type[ModelSettings], args: argparse.Namespace) -> argparse.Namespace:
    """The settings from flags, ``--config`` and ``--set``, written into ``args`` for the command."""
    from sage_dialog.commands.config_flags import config_from_args, settings_into

    return settings_into(args, config_from_args(settings, args))


def sampling_from_args(args: Any) -> SamplingParams:

    if args.max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    from dataclasses import replace

    return replace(CHAT_SAMPLING.params(), temperature=args.temperature, top_p=args.top_p,
                   max_tokens=args.max_tokens, seed=args.seed)


def backend_from_args(args: Any) -> Backend:
    """Load the backend named by ``--model`` (with ``--adapter``), failing with a one-line error."""
    from sage_dialog.backends.base import BackendConfig, load_backend

    options: dict[str, Any] = {}
    if getattr(args, "adapter", None):
        if not args.model.startswith("hf:"):
            raise UserError(f"--adapter works with hf: models only, got --model {args.model}")
        options["adapter"] = args.adapter
    return load_backend(BackendConfig(spec=args.model, options=options))
