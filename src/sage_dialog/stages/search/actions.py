"""Search in the latent: action proposals at an assistant decision, and the ``latent`` strategy.

A model trained on State-Action Chains writes ``{state} {action} reply``. Instead of sampling
whole replies and hoping they carry different actions, a latent search branches on the *action*:

1. **State.** The model writes its state block once per decision (stop at ``}``; greedy by default,
   ``state_temperature``); every action below shares it, so the branches differ only in what the
   assistant chooses to do.
2. **Proposals** (:func:`propose`), K distinct actions with a prior each:

   * *closed set* (``action_set``: a label-set file or shipped set such as ``esconv_strategies``,
     a JSON list of tag objects, or ``sandbox``): every action's prefill (``{a_motivation: ..,``) is
     scored after the state block in **one** :meth:`Backend.score` pass; the prior is the model's own
     probability, normalised over the set (sharpened or flattened by ``prior_temperature``), and the
     top K are kept. Exploration: ``epsilon`` mixes in the uniform distribution, ``dirichlet_alpha``
     mixes in seeded Dirichlet noise (weight ``dirichlet_weight``), both before the top-K cut.
   * *open vocabulary* (no ``action_set``): ``open_samples`` action blocks are sampled (stop at the
     closing brace), deduplicated, scored in one pass, and the K most likely kept.
3. **Realisation** (:func:`realize`): each action is prefilled (state block + action block) and the
   model samples ``replies`` replies under it.

The ``latent`` strategy is best-of-K over realised actions: the K x m candidates are judged by the
run's selector (``generate`` or ``logprob`` mode, or the sandbox oracle) or, with ``value: rollout``,
by the selector reading ``lookahead_depth`` turns rolled forward with the user simulator.
``mcts`` (:mod:`.mcts`) spends more replies on the actions that look best.

Both record what they weighed in the tree: the node a decision follows gets ``branches``
(:class:`~sage_dialog.core.schema.ActionBranch`: action, prior, visits, value, realised replies) and
each candidate the index of its ``branch``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sage_dialog.backends.base import ChatRequest, ScoreRequest
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.prompts import derive_seed
from sage_dialog.core.schema import ActionBranch, SearchNode, SelectionDecision, Tags, Turn
from sage_dialog.roles.protocols import SelectionTask
from sage_dialog.stages.search.rollout import assistant_messages, parse_assistant
from sage_dialog.stages.search.tree import node_turn

if TYPE_CHECKING:
    from sage_dialog.stages.search.search import _SeedSearch

# a tag block is short: this bounds the calls that only write one block
BLOCK_MAX_TOKENS = 64


class LatentConfig(BaseModel):
    """Options of the ``latent`` and ``mcts`` strategies (``search.latent`` in configs)."""

    model_config = ConfigDict(extra="forbid")
    action_set: str | list[Tags] | None = Field(
        default=None, description="closed action set: a label-set name or file (labels go to a_motivation), a "
        "JSON file with a list of tag objects, 'sandbox', or a list of tag objects; null: open vocabulary")
    k: int = Field(default=4, ge=1, description="actions proposed per decision")
    replies: int = Field(default=1, ge=1, description="replies sampled per action (latent)")
    prior_temperature: float = Field(default=1.0, gt=0, description="prior = softmax(logprob / T)")
    epsilon: float = Field(default=0.0, ge=0, le=1, description="mix the uniform distribution into the prior")
    dirichlet_alpha: float | None = Field(default=None, gt=0, description="mix Dirichlet noise into the prior")
    dirichlet_weight: float = Field(default=0.25, ge=0, le=1)
    state_temperature: float | None = Field(
        default=0.0, ge=0, description="temperature of the state block (0: the model's most likely reading of the "
        "user; null: the search's sampling temperature)")
    open_samples: int = Field(default=8, ge=1, description="action blocks sampled per decision (open vocabulary)")
    value: Literal["judge", "rollout"] = Field(
        default="judge", description="judge the replies themselves, or lookahead_depth turns rolled forward")
    simulations: int = Field(default=8, ge=1, description="replies realised per decision (mcts)")
    batch: int | None = Field(default=None, ge=1, description="replies per mcts round (default: k)")
    c_puct: float = Field(default=1.5, ge=0, description="exploration weight of PUCT (mcts)")


@dataclasses.dataclass
class Proposal:
    """One proposed action: its tags, prior and the full prefill that forces it."""

    action: Tags
    prior: float
    prefill: str


# ---------------------------------------------------------------------------------------------
# action sets


def load_action_set(spec: str | Sequence[Tags | dict[str, Any]]) -> list[Tags]:
    """The closed action set named by ``spec`` (see :class:`LatentConfig`), deduplicated, in order."""
    if not isinstance(spec, str):
        acts = [a if isinstance(a, Tags) else Tags.model_validate(a) for a in spec]
    elif spec == "sandbox":
        from sage_dialog.roles.factory import oracle_provider  # the offline world's six actions (a plug-in)

        acts = oracle_provider().actions()
    elif spec.endswith(".json") or spec.endswith(".jsonl"):
        acts = _read_action_file(Path(spec))
    else:
        from sage_dialog.labels import load_label_set

        acts = [Tags(motivation=label) for label in load_label_set(spec)]
    out: list[Tags] = []
    seen: set[str] = set()
    for i, a in enumerate(acts, 1):
        if a.is_empty():
            raise UserError(f"action set {spec if isinstance(spec, str) else '(list)'}: action {i} has no field")
        try:
            key = sac.action_prefill(a)
        except sac.SacError as e:
            raise UserError(f"action set {spec if isinstance(spec, str) else '(list)'}: action {i}: {e}") from None
        if key not in seen:
            seen.add(key)
            out.append(a)
    if not out:
        raise UserError(f"action set {spec}: no actions")
    return out


def _read_action_file(p: Path) -> list[Tags]:
    if not p.is_file():
        raise UserError(f"{p}: no such action-set file")
    try:
        text = p.read_text(encoding="utf-8")
        items = json.loads(text) if p.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{p}: not a JSON list of tag objects ({e})") from None
    if not isinstance(items, list):
        raise UserError(f"{p}: expected a JSON list of tag objects")
    out = []
    for i, obj in enumerate(items, 1):
        try:
            out.append(Tags.model_validate(obj))
        except ValidationError as e:
            raise UserError(f"{p}: record {i}: {e.errors()[0]['msg']}") from None
    return out


# ---------------------------------------------------------------------------------------------
# priors


def normalise(logprobs: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(logprob / temperature)."""
    m = max(x / temperature for x in logprobs)
    ex = [math.exp(x / temperature - m) for x in logprobs]
    s = sum(ex)
    return [x / s for x in ex]


def explore(priors: Sequence[float], cfg: LatentConfig, rng: random.Random) -> list[float]:
    """The priors with the configured exploration mixed in (uniform ``epsilon``, Dirichlet noise)."""
    p = list(priors)
    n = len(p)
    if cfg.epsilon > 0:
        p = [(1 - cfg.epsilon) * x + cfg.epsilon / n for x in p]
    if cfg.dirichlet_alpha is not None and cfg.dirichlet_weight > 0:
        g = [rng.gammavariate(cfg.dirichlet_alpha, 1.0) for _ in range(n)]
        s = sum(g) or 1.0
        w = cfg.dirichlet_weight
        p = [(1 - w) * x + w * y / s for x, y in zip(p, g, strict=True)]
    return p


def top_k(priors: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` largest priors (ties: the earlier one), best first."""
    return sorted(range(len(priors)), key=lambda i: (-priors[i], i))[:k]


# ---------------------------------------------------------------------------------------------
# proposals and realisation


def _block_params(s: _SeedSearch, seed: int) -> Any:
    return dataclasses.replace(s.sampling, max_tokens=BLOCK_MAX_TOKENS, stop=("}",), seed=seed)


def _block(completion: str) -> str:
    """The first tag block of a completion that stopped at ``}`` (the brace restored)."""
    body = completion.strip().split("}", 1)[0]
    return "{" + body.lstrip("{").replace("{", " ") + "}"


def _read_state(completion: str) -> str:
    """The state head (``{u_...} ``) from a sampled first block; empty when it is no state block."""
    parsed = sac.parse(_block(completion))
    if not parsed.blocks or parsed.blocks[0][0] != "state":
        return ""
    try:
        return sac.render_block(parsed.blocks[0][1], "state") + " "
    except sac.SacError:
        return ""


async def propose(s: _SeedSearch, path: list[SearchNode]) -> list[Proposal]:
    """K distinct actions for the decision after ``path`` (its last node is the user turn), best first."""
    cfg = s.cfg.latent
    parent = path[-1]
    msgs = assistant_messages([node_turn(n) for n in path], s.cfg.system_prompt)
    # the model opens the block itself: a prefilled lone "{" may split a token it always saw whole
    st_params = _block_params(s, derive_seed(s.cfg.seed, s.tree, parent.id, "state"))
    if cfg.state_temperature is not None:
        st_params = dataclasses.replace(st_params, temperature=cfg.state_temperature)
    [st] = await s.generate([ChatRequest(messages=msgs, n=1, sampling=st_params)])
    head = _read_state(st.completions[0].text if st.completions else "")
    if s.action_set is not None:
        actions = list(s.action_set)
        options = [sac.action_prefill(a) for a in actions]
    else:
        req = ChatRequest(messages=msgs, n=cfg.open_samples, prefill=head or None,
                          sampling=_block_params(s, derive_seed(s.cfg.seed, s.tree, parent.id, "open")))
        [res] = await s.generate([req])
        actions, options = [], []
        for c in res.completions:
            parsed = sac.parse(_block(c.text))
            if not parsed.blocks or parsed.blocks[0][1].is_empty():
                continue
            tags = parsed.blocks[0][1]
            try:
                opt = sac.render_block(tags, "action") + " "
            except sac.SacError:
                continue
            if opt not in options:
                actions.append(tags)
                options.append(opt)
        if not actions:  # nothing readable: one unconstrained branch
            return [Proposal(action=Tags(), prior=1.0, prefill=head)]
    [sc] = await s.score([ScoreRequest(messages=msgs, options=options, prefill=head or None)])
    priors = normalise(sc.logprobs, cfg.prior_temperature)
    rng = random.Random(derive_seed(s.cfg.seed, s.tree, parent.id, "noise"))
    noisy = explore(priors, cfg, rng)
    keep = top_k(noisy, cfg.k)
    total = sum(noisy[i] for i in keep) or 1.0
    return [Proposal(action=actions[i], prior=noisy[i] / total, prefill=head + options[i]) for i in keep]


def _forced(turn: Turn, action: Tags) -> Turn:
    """The forced action fields win over whatever the model wrote into the block."""
    upd = {k: v for k, v in action.model_dump(exclude_defaults=True).items() if k != "extra"}
    if not upd:
        return turn
    return turn.model_copy(update={"action": (turn.action or Tags()).model_copy(update=upd)})


async def realize(s: _SeedSearch, path: list[SearchNode], props: Sequence[Proposal], which: Sequence[int],
                  n: int, tag: Any) -> list[list[SearchNode]]:
    """Sample ``n`` replies under each proposal ``props[which[j]]``; returns the new assistant nodes per entry."""
    parent = path[-1]
    msgs = assistant_messages([node_turn(x) for x in path], s.cfg.system_prompt)
    reqs = [ChatRequest(messages=msgs, n=n, prefill=props[b].prefill or None,
                        sampling=dataclasses.replace(s.sampling, seed=derive_seed(s.cfg.seed, s.tree, parent.id,
                                                                                  "realize", tag, j, b)))
            for j, b in enumerate(which)]
    res = await s.generate(reqs)
    out: list[list[SearchNode]] = []
    for b, req, r in zip(which, reqs, res, strict=True):
        nodes = []
        for c in r.completions:
            turn = _forced(parse_assistant(props[b].prefill + c.text), props[b].action)
            nodes.append(s._add("assistant", turn.text, parent, state=turn.state, action=turn.action, branch=b,
                                sampling={**req.sampling.as_dict(), "prefill": props[b].prefill},
                                model=s.roles.assistant_name))
        out.append(nodes)
    return out


async def judge(s: _SeedSearch, path: list[SearchNode], cands: list[SearchNode], tag: Any) -> tuple[SelectionDecision, list[float]]:
    """Judge ``cands`` (or their rollouts, ``value: rollout``); returns the decision and a value per candidate.

    Values are the judge's scores when it gives them (oracle score, logprob option probability),
    else 1 for the chosen candidate and 0 for the others. An unparsed answer keeps the first.
    """
    shown = [node_turn(n) for n in cands]
    if s.cfg.latent.value == "rollout":
        shown = await s._lookahead([[*path, n] for n in cands])
    [d] = await s.select([SelectionTask(history=[node_turn(n) for n in path], candidates=shown,
                                        seed=derive_seed(s.cfg.seed, s.tree, "judge", path[-1].id, tag))])
    s.outcomes[d.outcome] = s.outcomes.get(d.outcome, 0) + 1
    if d.choice is None:
        d = d.model_copy(update={"choice": _argmax(d.scores) if d.scores else 0})
    if d.scores is not None:
        values = [float(x) for x in d.scores]
    else:
        values = [1.0 if i == d.choice and d.outcome != "none_good" else 0.0 for i in range(len(cands))]
    for n, v in zip(cands, values, strict=True):
        n.decision = d
        n.score = v
    return d, values


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def record_branches(parent: SearchNode, props: Sequence[Proposal], nodes: Sequence[SearchNode], chosen: int) -> None:
    """Write the action branches of a decision onto the node it followed."""
    out = []
    for b, p in enumerate(props):
        mine = [n for n in nodes if n.branch == b]
        vals = [n.score for n in mine if n.score is not None]
        out.append(ActionBranch(action=p.action, prior=round(p.prior, 6), visits=len(mine),
                                value=round(sum(vals) / len(vals), 6) if vals else None,
                                replies=[n.id for n in mine], chosen=b == chosen))
    parent.branches = out


async def decide_latent(s: _SeedSearch, path: list[SearchNode], turn: int) -> SearchNode:
    """Best-of-K over realised actions: propose, realise ``replies`` each, judge all, keep the best."""
    props = await propose(s, path)
    groups = await realize(s, path, props, list(range(len(props))), s.cfg.latent.replies, "latent")
    cands = [n for g in groups for n in g]
    d, _ = await judge(s, path, cands, turn)
    assert d.choice is not None
    kept = cands[d.choice]
    record_branches(path[-1], props, cands, kept.branch if kept.branch is not None else 0)
    return kept


async def run_decisions(s: _SeedSearch, decide: Any) -> list[SearchNode]:
    """One dialog per seed: ``decide`` picks each assistant turn, the user simulator answers."""
    from sage_dialog.stages.search.budget import BudgetExhausted

    path = [s._add("user", s.seed_text, None, sampling={})]
    try:
        for turn in range(s.cfg.turns):
            s._check_budget()
            path.append(await decide(s, path, turn))
            if turn < s.cfg.turns - 1:
                [u] = await s._user_replies([path], "user")
                path.append(u)
    except BudgetExhausted:
        s.stopped = "budget"
    for n in path:
        n.kept = True
    return s.nodes
