"""The models and roles of one search, built from its :class:`~.stage.SearchRunConfig` (locally, or once
per Ray worker by :mod:`.remote`)."""

from __future__ import annotations

from typing import Any

ASSISTANT = "assistant"  # a role spec naming the model being searched (as in stage.py)


def _role(spec: str, assistant: str) -> str:
    return assistant if spec == ASSISTANT else spec


def backend_pool(cfg: Any) -> Any:
    """The backends of one search (a :class:`roles.factory.BackendPool`: each spec loaded once)."""
    from sage_dialog.backends.base import parse_spec
    from sage_dialog.roles.factory import BackendPool

    provider, _ = parse_spec(cfg.assistant or "")
    return BackendPool(cfg.cache, cfg.backend_options, options_provider=provider)


def build_roles(cfg: Any, pool: Any, strategy: Any) -> tuple[Any, Any, Any]:
    """The assistant backend, user simulator and selector of a search (models loaded through ``pool``)."""
    from sage_dialog.backends.base import SamplingParams
    from sage_dialog.core.prompts import load_prompt
    from sage_dialog.roles.factory import make_selector, make_user

    assert cfg.assistant is not None
    user_persona = load_prompt(cfg.user_persona) if cfg.user_persona else None
    s = strategy.sampling
    user_sampling = SamplingParams(temperature=s.temperature, top_k=s.top_k, repetition_penalty=s.repetition_penalty,
                                   max_tokens=cfg.user_max_tokens)
    assistant = pool.get(cfg.assistant)
    # one model plays the user and the judge too unless told otherwise (loaded once by the pool)
    user = make_user(_role(cfg.user, cfg.assistant), pool, persona=user_persona, seed=strategy.seed,
                     sampling=user_sampling)
    selector = make_selector(_role(cfg.judge, cfg.assistant), pool, criteria=cfg.judge_criteria(),
                             mode=cfg.judge_mode, none_policy=cfg.none_policy, orders=cfg.judge_orders)
    return assistant, user, selector


__all__ = ["backend_pool", "build_roles"]
