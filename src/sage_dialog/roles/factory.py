"""Role objects from config values, shared by the search, compare and run commands.

A role (user simulator, selector judge, pairwise judge) is named in configs and on command lines by
a backend spec (``hf:PATH``, ``openai:MODEL``, ...: the role is played by that model through its
LLM implementation) or by ``"oracle"`` (the sandbox world's oracle for that role). A
:class:`BackendPool` loads each model once, however many roles it plays.
"""

from __future__ import annotations

from typing import Any

from sage_dialog.backends.base import Backend, BackendConfig, SamplingParams, load_backend
from sage_dialog.roles.protocols import PairwiseJudge, Selector, UserSimulator

ORACLE = "oracle"


class BackendPool:
    """Backends by spec, each loaded once. ``options`` go to every backend of ``options_provider``
    (for example the batch size of in-process models); ``cache`` is the shared response cache."""

    def __init__(self, cache: str | None = None, options: dict[str, Any] | None = None,
                 options_provider: str = "hf", ledger: Any = None):
        self.cache = cache
        self.options = options or {}
        self.options_provider = options_provider
        self.ledger = ledger  # a backends.ledger.Ledger that counts every call of every backend loaded here
        self.loaded: dict[str, Backend] = {}

    def get(self, spec: str | BackendConfig) -> Backend:
        if isinstance(spec, BackendConfig):
            cfg = spec if spec.cache or not self.cache else spec.model_copy(update={"cache": self.cache})
        else:
            opts = self.options if spec.startswith(f"{self.options_provider}:") else {}
            cfg = BackendConfig(spec=spec, options=opts, cache=self.cache)
        key = cfg.model_dump_json()
        if key not in self.loaded:
            backend = load_backend(cfg)
            self.loaded[key] = self.ledger.track(backend) if self.ledger is not None else backend
        return self.loaded[key]

    async def aclose(self) -> None:
        for b in self.loaded.values():
            await b.aclose()
        self.loaded.clear()


def _oracle(role: str, **kw: Any) -> Any:
    from sage_dialog.sandbox.oracles import oracle_for

    return oracle_for(role, **kw)


def make_user(spec: str | BackendConfig, pool: BackendPool, *, persona: str | None = None, seed: int = 0,
              sampling: SamplingParams | None = None) -> UserSimulator:
    """A user simulator: the oracle, or a model with the roles flipped (``persona`` is the prompt text)."""
    if spec == ORACLE:
        user: UserSimulator = _oracle("user", seed=seed)
        return user
    from sage_dialog.roles.user_simulator import LLMUserSimulator

    return LLMUserSimulator(pool.get(spec), persona_text=persona, sampling=sampling)


def make_selector(spec: str | BackendConfig, pool: BackendPool, *, criteria: str = "companion",
                  mode: str = "generate", none_policy: str = "resample") -> Selector:
    """An N-way selector judge: the oracle, or a model judging by ``criteria`` (see :mod:`judges`)."""
    if spec == ORACLE:
        selector: Selector = _oracle("selector")
        return selector
    from sage_dialog.roles.selector import LLMSelector

    return LLMSelector(pool.get(spec), criteria=criteria, mode=mode, none_policy=none_policy)  # type: ignore[arg-type]


def make_pairwise_judge(spec: str | BackendConfig, pool: BackendPool, *, mode: str = "generate") -> PairwiseJudge:
    """A pairwise judge: the oracle, or a model (``mode`` generate or score)."""
    if spec == ORACLE:
        judge: PairwiseJudge = _oracle("pairwise")
        return judge
    from sage_dialog.roles.pairwise_judge import LLMPairwiseJudge

    return LLMPairwiseJudge(pool.get(spec), mode=mode)  # type: ignore[arg-type]
