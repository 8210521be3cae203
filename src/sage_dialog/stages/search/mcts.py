"""``mcts``: PUCT over the actions of each assistant decision.

At every assistant turn the K proposed actions (:func:`.actions.propose`, priors = the model's own
probabilities) are the children of the decision. The search runs in rounds; each round picks
``batch`` actions by PUCT (with a virtual visit for each pick, so a round may pick one action
several times or spread over several), realises one reply under each, and values them with the
judge: the replies themselves, or (``value: rollout``) the selector reading ``lookahead_depth``
turns rolled forward with the user simulator. Values are the judge's scores (oracle score, logprob
option probability; 1/0 for a generate-mode choice), min-max normalised over the decision::

    PUCT(a) = Q(a) + c_puct * P(a) * sqrt(1 + sum_b N(b)) / (1 + N(a))

with unvisited actions valued at the mean of what was seen. The search stops after
``simulations`` replies (a last round of one reply joins the round before it: a relative judge
cannot value a lone reply), or earlier when the per-seed budget (``budget_tokens``,
``budget_requests``) would be overrun: each decision gets an equal share of what is left, and a
round is started only when the previous round's cost still fits in it. The action with the most
visits is kept (ties: higher mean value, then higher prior) with its best-valued reply.

Every choice depends only on journaled call results and seeds derived from the config seed, the
tree and the node, so a run is deterministic and a killed run resumes from its journal.
"""

from __future__ import annotations

import math

from sage_dialog.core.schema import SearchNode
from sage_dialog.stages.search.actions import judge, play, propose, realize, record_branches
from sage_dialog.stages.search.context import SearchContext


def puct_pick(priors: list[float], visits: list[int], values: list[float], c: float, lo: float, hi: float,
              fpu: float) -> int:
    """The action PUCT picks (ties: the earlier one). ``values`` are value sums."""
    total = sum(visits)
    span = hi - lo

    def q(i: int) -> float:
        v = values[i] / visits[i] if visits[i] else fpu
        return (v - lo) / span if span > 0 else 0.5

    def score(i: int) -> float:
        return q(i) + c * priors[i] * math.sqrt(1 + total) / (1 + visits[i])

    return max(range(len(priors)), key=lambda i: (score(i), -i))


def _share(s: SearchContext, turn: int) -> tuple[float | None, float | None]:
    """This decision's share of the per-seed budget still left (tokens, requests)."""
    left = s.cfg.turns - turn
    tok = (s.cfg.budget_tokens - s.tokens) / left if s.cfg.budget_tokens is not None else None
    req = (s.cfg.budget_requests - s.requests) / left if s.cfg.budget_requests is not None else None
    return tok, req


async def decide(s: SearchContext, path: list[SearchNode], turn: int) -> SearchNode:
    """One decision: PUCT rounds over the proposed actions; returns the kept reply."""
    cfg = s.cfg.latent
    tok_share, req_share = _share(s, turn)
    t0, r0 = s.tokens, s.requests
    props = await propose(s, path)
    priors = [p.prior for p in props]
    k = len(props)
    visits, sums = [0] * k, [0.0] * k
    seen: list[float] = []
    nodes: list[SearchNode] = []
    batch = cfg.batch or cfg.k
    rnd = 0
    last_cost = (0, 0)
    while len(nodes) < cfg.simulations:
        if rnd > 0:  # the first round always runs: a decision needs at least one reply
            used_t, used_r = s.tokens - t0, s.requests - r0
            if tok_share is not None and used_t + last_cost[0] > tok_share:
                break
            if req_share is not None and used_r + last_cost[1] > req_share:
                break
        lo, hi = (min(seen), max(seen)) if seen else (0.0, 1.0)
        fpu = sum(seen) / len(seen) if seen else 0.5
        v_tmp, s_tmp = list(visits), list(sums)
        picks: list[int] = []
        left = cfg.simulations - len(nodes)
        size = min(batch, left)
        if left - size == 1 and size > 1:
            size += 1  # never leave a last round of one: a relative judge has nothing to compare it with
        for _ in range(size):
            a = puct_pick(priors, v_tmp, s_tmp, cfg.c_puct, lo, hi, fpu)
            picks.append(a)
            # a virtual visit at the current mean: the next pick of the round may look elsewhere
            mean = s_tmp[a] / v_tmp[a] if v_tmp[a] else fpu
            v_tmp[a] += 1
            s_tmp[a] += mean
        tb, rb = s.tokens, s.requests
        groups = await realize(s, path, props, picks, 1, rnd)
        cands = [g[0] for g in groups]
        _, vals = await judge(s, path, cands, ("mcts", rnd))
        for a, v in zip(picks, vals, strict=True):
            visits[a] += 1
            sums[a] += v
        seen.extend(vals)
        nodes.extend(cands)
        last_cost = (s.tokens - tb, s.requests - rb)
        rnd += 1
    best = max(range(k), key=lambda i: (visits[i], sums[i] / visits[i] if visits[i] else float("-inf"), priors[i], -i))
    mine = [n for n in nodes if n.branch == best]
    kept = max(mine, key=lambda n: (n.score if n.score is not None else float("-inf"), -nodes.index(n)))
    record_branches(path[-1], props, nodes, best)
    return kept


async def run(ctx: SearchContext) -> list[SearchNode]:
    """Search one seed: one dialog, each assistant turn chosen by PUCT rounds (:func:`decide`)."""
    return await play(ctx, decide)
