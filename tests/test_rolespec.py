"""Role objects from config values: one model loaded once for several roles; oracles by name."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.roles.factory import BackendPool, make_pairwise_judge, make_selector, make_user
from sage_dialog.roles.pairwise_judge import LLMPairwiseJudge
from sage_dialog.roles.protocols import PairwiseJudge, Selector, UserSimulator
from sage_dialog.roles.selector import LLMSelector
from sage_dialog.roles.user_simulator import LLMUserSimulator


def test_one_model_plays_every_role_and_is_loaded_once(tiny_model: Path, tmp_path: Path) -> None:
    pool = BackendPool(str(tmp_path / "cache.sqlite"), {"batch_size": 8})
    spec = f"hf:{tiny_model}"
    user = make_user(spec, pool, persona="You are terse.")
    selector = make_selector(spec, pool, criteria="empathy", mode="logprob")
    judge = make_pairwise_judge(spec, pool)
    assert isinstance(user, LLMUserSimulator) and user.persona == "You are terse."
    assert isinstance(selector, LLMSelector) and isinstance(judge, LLMPairwiseJudge)
    assert len(pool.loaded) == 1  # the same model behind all three roles
    backend = next(iter(pool.loaded.values()))
    assert user.backend is backend and selector.backend is backend
    assert backend.name.startswith("hf:")
    asyncio.run(pool.aclose())
    assert pool.loaded == {}


def test_oracles_by_name_implement_the_role_protocols() -> None:
    pool = BackendPool()
    assert isinstance(make_user("oracle", pool, seed=3), UserSimulator)
    assert isinstance(make_selector("oracle", pool), Selector)
    assert isinstance(make_pairwise_judge("oracle", pool), PairwiseJudge)
    assert pool.loaded == {}


def test_a_bad_spec_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown provider"):
        make_user("nope:model", BackendPool())
