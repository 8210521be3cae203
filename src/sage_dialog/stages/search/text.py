"""Text search: ``best_of_n``, ``beam`` and ``lookahead``, branching on whole sampled replies.

For every seed the assistant samples ``candidates`` replies per turn, the run's selector chooses,
the user simulator answers the kept reply, for ``turns`` assistant turns:

* ``best_of_n`` (the original SAGE search): one dialog per seed; the judge's choice is kept.
* ``beam``: keep ``beam_width`` dialogs per seed; every beam is expanded and judged, and the children
  are ranked by their path's mean judge score (the option probability in logprob mode; 1 for the
  chosen candidate and 0 for the others otherwise), so the best ``beam_width`` dialogs survive.
* ``lookahead``: before choosing, every candidate is rolled forward ``lookahead_depth`` turns (user
  reply, assistant reply, ...) and the judge compares the *continuations*: a future-aware choice.

When the judge finds no good candidate its ``none_policy`` applies (``resample`` up to
``max_resamples`` times then keep the best, ``keep_best``, ``stop``); an unparsed answer keeps the first
candidate (a plain sample) and is recorded as such.
"""

from __future__ import annotations

import dataclasses

from sage_dialog.core.prompts import derive_seed
from sage_dialog.core.schema import SearchNode, SelectionDecision, Turn
from sage_dialog.roles.protocols import SelectionTask
from sage_dialog.stages.search.context import BudgetExhausted, SearchContext, argmax
from sage_dialog.stages.search.tree import node_turn


@dataclasses.dataclass
class Beam:
    """One dialog being grown: its path, the judge's score of each kept reply, and whether it ended."""

    path: list[SearchNode]
    scores: list[float] = dataclasses.field(default_factory=list)
    done: bool = False

    @property
    def value(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


async def decide(ctx: SearchContext, beams: list[Beam]) -> list[tuple[list[SearchNode], SelectionDecision | None]]:
    """Sample, judge and apply the none-policy for each beam; returns (candidates, decision or None=stop)."""
    N = ctx.cfg.candidates
    result: dict[int, tuple[list[SearchNode], SelectionDecision | None]] = {}
    pending = list(range(len(beams)))
    attempt = 0
    while pending:
        if attempt > 0:
            ctx.check_budget()
        parent_of = {b: beams[b].path[-1] for b in pending}
        reqs = [ctx.assistant_request(beams[b].path, derive_seed(ctx.cfg.seed, ctx.tree, parent_of[b].id, attempt, j))
                for b in pending for j in range(N)]
        res = await ctx.generate(reqs)
        cands: dict[int, list[SearchNode]] = {}
        for k, b in enumerate(pending):
            cands[b] = [ctx.assistant_node(res[k * N + j], parent_of[b], reqs[k * N + j], attempt=attempt)
                        for j in range(N)]
        shown: dict[int, list[Turn]] = {b: [node_turn(n) for n in cands[b]] for b in pending}
        if ctx.cfg.strategy == "lookahead":
            flat = [(b, n) for b in pending for n in cands[b]]
            conts = await ctx.lookahead([[*beams[b].path, n] for b, n in flat])
            for b in pending:
                shown[b] = [c for (bb, _), c in zip(flat, conts, strict=True) if bb == b]
        tasks = [SelectionTask(history=[node_turn(n) for n in beams[b].path], candidates=shown[b],
                               seed=derive_seed(ctx.cfg.seed, ctx.tree, "judge", parent_of[b].id, attempt))
                 for b in pending]
        decisions = await ctx.select(tasks)
        still = []
        for b, d in zip(pending, decisions, strict=True):
            ctx.count(d.outcome)
            for i, n in enumerate(cands[b]):
                n.decision = d
                if d.scores is not None:
                    n.score = d.scores[i]
            prev = result.get(b, ([], None))[0]
            if d.outcome == "none_good":
                policy = ctx.roles.none_policy
                if policy == "resample" and attempt < ctx.cfg.max_resamples:
                    result[b] = (prev + cands[b], None)
                    still.append(b)
                    continue
                if policy == "stop":
                    result[b] = (prev + cands[b], None)
                    continue
                if d.choice is None:  # keep the best: by score if the judge gave any, else the first sample
                    d = d.model_copy(update={"choice": argmax(d.scores) if d.scores else 0})
            elif d.outcome == "unparsed":
                d = d.model_copy(update={"choice": 0})
            result[b] = (prev + cands[b], d)
        pending = still
        attempt += 1
    return [result[b] for b in range(len(beams))]


async def run(ctx: SearchContext) -> list[SearchNode]:
    """Search one seed (``best_of_n``, ``beam`` or ``lookahead``); returns every node, the best path kept."""
    root = ctx.add("user", ctx.seed_text, None, sampling={})
    beams = [Beam(path=[root])]
    width = ctx.cfg.beam_width if ctx.cfg.strategy == "beam" else 1
    try:
        for turn in range(ctx.cfg.turns):
            ctx.check_budget()
            active = [b for b in beams if not b.done]
            if not active:
                break
            decided = await decide(ctx, active)
            children: list[tuple[float, int, int, Beam]] = []
            finished = [b for b in beams if b.done]
            for bi, (beam, (cands, d)) in enumerate(zip(active, decided, strict=True)):
                if d is None:  # the judge said stop: this dialog ends here
                    beam.done = True
                    finished.append(beam)
                    continue
                last = cands[-ctx.cfg.candidates:]  # the final draw's candidates
                assert d.choice is not None
                for ci, n in enumerate(last):
                    if width == 1 and ci != d.choice:
                        continue
                    s = d.scores[ci] if d.scores is not None else (1.0 if ci == d.choice else 0.0)
                    child = Beam(path=[*beam.path, n], scores=[*beam.scores, s])
                    children.append((-child.value, 0 if ci == d.choice else 1, bi * 10_000 + ci, child))
            children.sort(key=lambda x: x[:3])
            beams = finished + [c[3] for c in children[:width]]
            if turn < ctx.cfg.turns - 1:
                grow = [b for b in beams if not b.done]
                users = await ctx.user_replies([b.path for b in grow], "user")
                for b, u in zip(grow, users, strict=True):
                    b.path.append(u)
    except BudgetExhausted:
        ctx.stopped = "budget"
    best = max(beams, key=lambda b: (b.value, len(b.path)))
    if best.done and ctx.stopped is None:
        ctx.stopped = "judge"
    for n in best.path:
        n.kept = True
    return ctx.nodes
