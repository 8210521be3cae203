"""Role objects from config values, shared by the search, compare and run commands.

A role (user simulator, selector judge, pairwise judge, annotator) is named in configs and on command lines by
a backend spec (``hf:PATH``, ``openai:MODEL``, ...: the role is played by that model through its
LLM implementation) or by ``"oracle"`` (the sandbox world's oracle for that role). A
:class:`BackendPool` loads each model once, however many roles it plays.

This module is the one place that resolves ``"oracle"``: an :class:`OracleProvider` registers itself
with :func:`register_oracle_provider`; when none has, the built-in ``sandbox`` plug-in is loaded by
name (:mod:`sage_dialog.core.plugins`), which registers its oracles on import. Nothing here (or in
any layer below ``sandbox/``) imports the sandbox.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sage_dialog.backends.base import Backend, BackendConfig, SamplingParams, load_backend
from sage_dialog.core.schema import Tags
from sage_dialog.roles.protocols import Annotator, PairwiseJudge, Selector, UserSimulator

ORACLE = "oracle"
ORACLE_PLUGIN = "sandbox"  # the plug-in loaded when no oracle provider registered itself


@runtime_checkable
class OracleProvider(Protocol):
    """A world that knows the ground truth: oracle roles, and the openings and actions to test on."""

    def oracle(self, role: str, **kw: Any) -> Any:
        """The oracle for ``role`` (annotator, selector, pairwise, user, action, reward)."""
        ...

    def seed_openings(self, n: int, seed: int) -> list[str]:
        """``n`` opening user utterances of the world."""
        ...

    def actions(self) -> list[Tags]:
        """The world's assistant actions as steering tags (no topic)."""
        ...


_provider: OracleProvider | None = None


def register_oracle_provider(provider: OracleProvider) -> None:
    """Make ``provider`` the world behind every ``"oracle"`` role spec."""
    global _provider
    _provider = provider


def oracle_provider() -> OracleProvider:
    """The registered oracle world (loading the sandbox plug-in when none registered)."""
    if _provider is None:
        from sage_dialog.core.plugins import load

        load(ORACLE_PLUGIN)
    if _provider is None:
        from sage_dialog.core.errors import UserError

        raise UserError(f"plug-in {ORACLE_PLUGIN!r} registered no oracle roles")
    return _provider


def oracle(role: str, **kw: Any) -> Any:
    """The oracle playing ``role`` (see :class:`OracleProvider`)."""
    return oracle_provider().oracle(role, **kw)


def is_oracle(spec: object) -> bool:
    """Whether a role spec names the oracle: ``oracle`` or ``oracle:VARIANT`` (a variant of the world's
    rules, e.g. the sandbox's ``oracle:long_horizon``)."""
    return isinstance(spec, str) and (spec == ORACLE or spec.startswith(ORACLE + ":"))


def oracle_for_spec(role: str, spec: str, **kw: Any) -> Any:
    """The oracle for ``role`` named by ``spec`` (``oracle`` or ``oracle:VARIANT``)."""
    variant = spec.partition(":")[2]
    return oracle(role, **({"variant": variant} if variant else {}), **kw)


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


def make_user(spec: str | BackendConfig, pool: BackendPool, *, persona: str | None = None, seed: int = 0,
              sampling: SamplingParams | None = None) -> UserSimulator:
    """A user simulator: the oracle, or a model with the roles flipped (``persona`` is the prompt text)."""
    if is_oracle(spec):
        user: UserSimulator = oracle_for_spec("user", str(spec), seed=seed)
        return user
    from sage_dialog.roles.user_simulator import LLMUserSimulator

    return LLMUserSimulator(pool.get(spec), persona_text=persona, sampling=sampling)


def make_selector(spec: str | BackendConfig, pool: BackendPool, *, criteria: str = "companion",
                  mode: str = "generate", none_policy: str = "resample", orders: int = 1) -> Selector:
    """An N-way selector judge: the oracle, or a model judging by ``criteria`` in ``orders`` shown
    orders (see :mod:`sage_dialog.roles.selector`)."""
    if is_oracle(spec):
        selector: Selector = oracle_for_spec("selector", str(spec))
        return selector
    from sage_dialog.roles.selector import LLMSelector

    return LLMSelector(pool.get(spec), criteria=criteria, mode=mode, none_policy=none_policy,  # type: ignore[arg-type]
                       orders=orders)


def make_pairwise_judge(spec: str | BackendConfig, pool: BackendPool, *, mode: str = "generate") -> PairwiseJudge:
    """A pairwise judge: the oracle, or a model (``mode`` generate or score)."""
    if is_oracle(spec):
        judge: PairwiseJudge = oracle_for_spec("pairwise", str(spec))
        return judge
    from sage_dialog.roles.pairwise_judge import LLMPairwiseJudge

    return LLMPairwiseJudge(pool.get(spec), mode=mode)  # type: ignore[arg-type]


def make_annotator(spec: str | BackendConfig, pool: BackendPool, *, labels: Any = None, mode: str = "generate",
                   **llm: Any) -> Annotator:
    """An annotator: the oracle, or a model (:mod:`sage_dialog.roles.annotator`). ``mode`` generate: the
    :class:`~sage_dialog.roles.annotator.LLMAnnotator` (JSON answers; ``llm`` are its options: tidy,
    few_shot, max_attempts, temperature, max_tokens_per_turn, template, json_prefill); score: the
    :class:`~sage_dialog.roles.annotator.ScoringAnnotator` (closed labels chosen by option scores).
    ``labels`` are the :class:`~sage_dialog.roles.annotator.LabelSets` (none: open vocabulary)."""
    if is_oracle(spec):
        annotator: Annotator = oracle_for_spec("annotator", str(spec))
        return annotator
    from sage_dialog.roles.annotator import LabelSets, LLMAnnotator, ScoringAnnotator

    if mode == "score":
        return ScoringAnnotator(pool.get(spec), labels or LabelSets())
    return LLMAnnotator(pool.get(spec), labels=labels, **llm)
