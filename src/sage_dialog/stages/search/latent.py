"""``latent``: best-of-K over actions. At each assistant decision K actions are proposed with the
model's own priors (:func:`.actions.propose`), ``replies`` replies are realised under each by
prefilling it, the run's selector judges all of them and the best is kept (options in
``SearchConfig.latent``; see :mod:`.actions`)."""

from __future__ import annotations

from sage_dialog.core.schema import SearchNode
from sage_dialog.stages.search.actions import judge, play, propose, realize, record_branches
from sage_dialog.stages.search.context import SearchContext


async def decide(s: SearchContext, path: list[SearchNode], turn: int) -> SearchNode:
    """Best-of-K over realised actions: propose, realise ``replies`` each, judge all, keep the best."""
    props = await propose(s, path)
    groups = await realize(s, path, props, list(range(len(props))), s.cfg.latent.replies, "latent")
    cands = [n for g in groups for n in g]
    d, _ = await judge(s, path, cands, turn)
    assert d.choice is not None
    kept = cands[d.choice]
    record_branches(path[-1], props, cands, kept.branch if kept.branch is not None else 0)
    return kept


async def run(ctx: SearchContext) -> list[SearchNode]:
    """Search one seed: one dialog, each assistant turn chosen by :func:`decide`."""
    return await play(ctx, decide)
