"""How an assistant samples its replies: the one sampling settings model of search, compare and chat.

:class:`SamplingConfig` is what configs and commands name (``sampling: {temperature: ..}``); a
request carries its :meth:`~SamplingConfig.params` (:class:`~sage_dialog.backends.base.SamplingParams`,
which adds the per-request ``seed`` and ``stop``). The class defaults are the original SAGE
search's (temperature 0.95, top-k 50, repetition penalty 1.1); a stage with other defaults keeps
them in a default instance (:data:`COMPARE_SAMPLING`, :data:`CHAT_SAMPLING`) and types its field
``Annotated[SamplingConfig, BeforeValidator(defaults_from(THOSE))]``, so a section that sets only
some keys takes the rest from the stage's defaults, never from another stage's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.backends.base import SamplingParams


class SamplingConfig(BaseModel):
    """Assistant sampling; the defaults are the original's (temperature 0.95, top-k 50, rep. penalty 1.1)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.95, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=50, ge=0)
    repetition_penalty: float = Field(default=1.1, gt=0)
    max_tokens: int = Field(default=128, ge=1)

    def params(self) -> SamplingParams:
        """The request-level sampling parameters (no seed, no stop strings)."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              repetition_penalty=self.repetition_penalty, max_tokens=self.max_tokens)


# the plain defaults of a model comparison (what `compare` always used)
COMPARE_SAMPLING = SamplingConfig(temperature=0.7, top_k=0, repetition_penalty=1.0)
# the defaults of the model options of chat, webui, serve and steerability (`--temperature`, `--max-tokens`)
CHAT_SAMPLING = SamplingConfig(temperature=0.8, top_k=0, repetition_penalty=1.0)


def defaults_from(defaults: SamplingConfig) -> Callable[[Any], Any]:
    """A before-validator that fills the keys a sampling mapping leaves out from ``defaults``."""

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {**defaults.model_dump(), **value}
        return value

    return fill
