"""Search in the latent: what the ``latent`` and ``mcts`` strategies share (action sets, proposals,
realisation, judging, one dialog per seed).

A model trained on State-Action Chains writes ``{state} {action} reply``. Instead of sampling
whole replies and hoping they carry different actions, a latent search branches on the *action*:

1. **State.** The model writes its state block once per decision (stop at ``}``; greedy by default,
   ``state_temperature``; the one-block steps of :mod:`sage_dialog.roles.steering`); every action
   below shares it, so the branches differ only in what the assistant chooses to do.
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

Candidates are valued by :func:`judge`: the run's selector (``generate`` or ``logprob`` mode, or the
sandbox oracle) or, with ``value: rollout``, the selector reading ``lookahead_depth`` turns rolled
forward with the user simulator. The ``latent`` strategy (:mod:`.latent`) is best-of-K over realised
actions; ``mcts`` (:mod:`.mcts`) spends more replies on the actions that look best.

Both record what they weighed in the tree: the node a decision follows gets ``branches``
(:class:`~sage_dialog.core.schema.ActionBranch`: action, prior, visits, value, realised replies) and
each candidate the index of its ``branch``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sage_dialog.backends.base import ChatRequest, ScoreRequest
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.prompts import derive_seed
from sage_dialog.core.schema import ActionBranch, SearchNode, SelectionDecision, Tags, Turn
from sage_dialog.roles.protocols import SelectionTask
from sage_dialog.roles.rollout import parse_assistant
from sage_dialog.roles.steering import block_sampling, forced_fields, own_block, state_head
from sage_dialog.stages.search.config import LatentConfig
from sage_dialog.stages.search.context import BudgetExhausted, SearchContext, argmax
from sage_dialog.stages.search.tree import node_turn

# a strategy's choice of one assistant turn: (context, path ending with the user turn, turn index) -> kept node
Decide = Callable[[SearchContext, list[SearchNode], int], Awaitable[SearchNode]]


@dataclasses.dataclass
class Proposal:
    """One proposed action: its tags, prior and the full prefill that forces it."""

    action: Tags
    prior: float
    prefill: str


# ---------------------------------------------------------------------------------------------
# action sets


def load_action_set(spec: str | Sequence[Tags | dict[str, Any]]) -> list[Tags]:
    """The closed action set named by ``spec`` (see :class:`.config.LatentConfig`), deduplicated, in order."""
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


async def propose(s: SearchContext, path: list[SearchNode]) -> list[Proposal]:
    """K distinct actions for the decision after ``path`` (its last node is the user turn), best first."""
    cfg = s.cfg.latent
    parent = path[-1]
    msgs = s.messages(path)
    # the model opens the block itself: a prefilled lone "{" may split a token it always saw whole
    st_params = block_sampling(s.sampling, seed=derive_seed(s.cfg.seed, s.tree, parent.id, "state"))
    if cfg.state_temperature is not None:
        st_params = dataclasses.replace(st_params, temperature=cfg.state_temperature)
    [st] = await s.generate([ChatRequest(messages=msgs, n=1, sampling=st_params)])
    head = state_head(st.completions[0].text if st.completions else "")
    if s.action_set is not None:
        actions = list(s.action_set)
        options = [sac.action_prefill(a) for a in actions]
    else:
        req = ChatRequest(messages=msgs, n=cfg.open_samples, prefill=head or None,
                          sampling=block_sampling(s.sampling, seed=derive_seed(s.cfg.seed, s.tree, parent.id, "open")))
        [res] = await s.generate([req])
        actions, options = [], []
        for c in res.completions:
            parsed = sac.parse(own_block(c.text))
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
    upd = forced_fields(action)
    if not upd:
        return turn
    return turn.model_copy(update={"action": (turn.action or Tags()).model_copy(update=upd)})


async def realize(s: SearchContext, path: list[SearchNode], props: Sequence[Proposal], which: Sequence[int],
                  n: int, tag: Any) -> list[list[SearchNode]]:
    """Sample ``n`` replies under each proposal ``props[which[j]]``; returns the new assistant nodes per entry."""
    parent = path[-1]
    msgs = s.messages(path)
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
            nodes.append(s.add("assistant", turn.text, parent, state=turn.state, action=turn.action, branch=b,
                                sampling={**req.sampling.as_dict(), "prefill": props[b].prefill},
                                model=s.roles.assistant_name))
        out.append(nodes)
    return out


async def judge(s: SearchContext, path: list[SearchNode], cands: list[SearchNode], tag: Any) -> tuple[SelectionDecision, list[float]]:
    """Judge ``cands`` (or their rollouts, ``value: rollout``); returns the decision and a value per candidate.

    Values are the judge's scores when it gives them (oracle score, logprob option probability),
    else 1 for the chosen candidate and 0 for the others. An unparsed answer keeps the first.
    """
    shown = [node_turn(n) for n in cands]
    if s.cfg.latent.value == "rollout":
        shown = await s.lookahead([[*path, n] for n in cands])
    [d] = await s.select([SelectionTask(history=[node_turn(n) for n in path], candidates=shown,
                                        seed=derive_seed(s.cfg.seed, s.tree, "judge", path[-1].id, tag))])
    s.count(d.outcome)
    if d.choice is None:
        d = d.model_copy(update={"choice": argmax(d.scores) if d.scores else 0})
    if d.scores is not None:
        values = [float(x) for x in d.scores]
    else:
        values = [1.0 if i == d.choice and d.outcome != "none_good" else 0.0 for i in range(len(cands))]
    for n, v in zip(cands, values, strict=True):
        n.decision = d
        n.score = v
    return d, values


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


async def play(s: SearchContext, decide: Decide) -> list[SearchNode]:
    """One dialog per seed: ``decide`` picks each assistant turn, the user simulator answers."""
    path = [s.add("user", s.seed_text, None, sampling={})]
    try:
        for turn in range(s.cfg.turns):
            s.check_budget()
            path.append(await decide(s, path, turn))
            if turn < s.cfg.turns - 1:
                [u] = await s.user_replies([path], "user")
                path.append(u)
    except BudgetExhausted:
        s.stopped = "budget"
    for n in path:
        n.kept = True
    return s.nodes
