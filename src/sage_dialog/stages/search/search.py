"""Self-play dialog tree search with a judge: best-of-N, beam and lookahead behind one interface.

For every seed utterance the assistant samples ``candidates`` replies per turn, a :class:`Selector`
chooses, the user simulator answers the kept reply, for ``turns`` assistant turns:

* ``best_of_n`` (the original SAGE search): one dialog per seed; the judge's choice is kept.
* ``beam``: keep ``beam_width`` dialogs per seed; every beam is expanded and judged, and the children
  are ranked by their path's mean judge score (the option probability in logprob mode; 1 for the
  chosen candidate and 0 for the others otherwise), so the best ``beam_width`` dialogs survive.
* ``lookahead``: before choosing, every candidate is rolled forward ``lookahead_depth`` turns (user
  reply, assistant reply, ...) and the judge compares the *continuations*: a future-aware choice.
* ``latent`` and ``mcts`` branch on the State-Action Chain *action* instead of on free samples:
  K actions are proposed with the model's own priors and realised by prefilling them; ``latent``
  judges them best-of-K, ``mcts`` runs PUCT over them (:mod:`.actions`, :mod:`.mcts`; options in
  ``SearchConfig.latent``).

When the judge finds no good candidate its ``none_policy`` applies (``resample`` up to
``max_resamples`` times then keep the best, ``keep_best``, ``stop``); an unparsed answer keeps the first
candidate (a plain sample) and is recorded as such. A per-seed budget in requests and/or tokens ends
a seed's search early (recorded as ``stopped: budget``).

Everything is in flight at once: the seeds run concurrently and every model call goes through a
:class:`Coalescer` that merges the calls of all seeds made in the same scheduling round into one
list for the backend, so a batching backend sees full batches.

Resumable: each seed keeps a journal of its completed calls (``journal/<tree>.jsonl``); a killed
search run again on the same folder replays the journal instead of calling the models and then
continues, giving the same tree as an uninterrupted run (sampling seeds are derived from the config
seed, the tree and the node, never from batch composition or timing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    Completion,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
)
from sage_dialog.core import io
from sage_dialog.core.errors import UserError
from sage_dialog.core.prompts import derive_seed
from sage_dialog.core.schema import Dialog, SearchNode, SelectionDecision, Tags, Turn
from sage_dialog.roles.protocols import SelectionTask, Selector, UserSimulator
from sage_dialog.stages.search.actions import LatentConfig
from sage_dialog.stages.search.budget import BudgetExhausted
from sage_dialog.stages.search.rollout import assistant_messages, parse_assistant
from sage_dialog.stages.search.tree import best_path, node_turn, path_dialog, write_tree

T = TypeVar("T")
R = TypeVar("R")

Strategy = Literal["best_of_n", "beam", "lookahead", "latent", "mcts"]
LATENT_STRATEGIES = ("latent", "mcts")


class SamplingConfig(BaseModel):
    """Assistant sampling; the defaults are the original's (temperature 0.95, top-k 50, rep. penalty 1.1)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.95, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=50, ge=0)
    repetition_penalty: float = Field(default=1.1, gt=0)
    max_tokens: int = Field(default=128, ge=1)

    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              repetition_penalty=self.repetition_penalty, max_tokens=self.max_tokens)


class SearchConfig(BaseModel):
    """What a search does (roles are passed as objects, see :func:`run_search`)."""

    model_config = ConfigDict(extra="forbid")
    strategy: Strategy = "best_of_n"
    turns: int = Field(default=8, ge=1, description="assistant turns per dialog")
    candidates: int = Field(default=4, ge=1, description="assistant replies sampled per decision")
    beam_width: int = Field(default=2, ge=1, description="dialogs kept per seed (beam)")
    lookahead_depth: int = Field(default=1, ge=1, description="turns rolled forward per candidate (lookahead)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    system_prompt: str | None = Field(default=None, description="assistant persona (system prompt)")
    max_resamples: int = Field(default=2, ge=0, description="new candidate draws when the judge finds none good")
    budget_requests: int | None = Field(default=None, ge=1, description="model requests per seed")
    budget_tokens: int | None = Field(default=None, ge=1, description="assistant tokens (prompt + completion) per seed")
    seed: int = 0
    latent: LatentConfig = Field(default_factory=LatentConfig, description="options of latent and mcts")


# ---------------------------------------------------------------------------------------------
# batching across seeds


class Coalescer(Generic[T, R]):
    """Merge list calls made concurrently into one call of ``fn`` (order kept, results split back).

    A flush waits until no new submission arrived for ``settle`` scheduling rounds, so every seed
    that is about to ask joins the same batch. ``batches`` records the size of each real call.
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]], settle: int = 3):
        self.fn = fn
        self.settle = settle
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches: list[int] = []

    async def __call__(self, items: list[T]) -> list[R]:
        if not items:
            return []
        fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        last = -1
        while len(self._pending) != last:
            last = len(self._pending)
            for _ in range(self.settle):
                await asyncio.sleep(0)
        batch, self._pending, self._flusher = self._pending, [], None
        flat = [x for items, _ in batch for x in items]
        self.batches.append(len(flat))
        try:
            results = await self.fn(flat)
            if len(results) != len(flat):
                raise RuntimeError(f"batched call returned {len(results)} results for {len(flat)} items")
        except BaseException as e:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        pos = 0
        for items, fut in batch:
            if not fut.done():
                fut.set_result(results[pos : pos + len(items)])
            pos += len(items)


# ---------------------------------------------------------------------------------------------
# journal (de)serialisation of call results


def _enc_chat(r: ChatResult) -> dict[str, Any]:
    return {"c": [[c.text, c.finish_reason, c.tokens_out] for c in r.completions], "ti": r.tokens_in}


def _dec_chat(d: dict[str, Any]) -> ChatResult:
    return ChatResult(completions=[Completion(text=t, finish_reason=f, tokens_out=n, cached=True) for t, f, n in d["c"]],
                      tokens_in=d["ti"])


def _enc_score(r: ScoreResult) -> dict[str, Any]:
    return {"lp": r.logprobs, "ti": r.tokens_in}


def _dec_score(d: dict[str, Any]) -> ScoreResult:
    return ScoreResult(logprobs=d["lp"], tokens_in=d["ti"], cached=True)


class _Roles:
    """The shared, coalesced role calls of one search run."""

    def __init__(self, assistant: Backend, user: UserSimulator, selector: Selector):
        self.assistant_name = assistant.name
        self.user_name = user.name
        self.generate: Coalescer[ChatRequest, ChatResult] = Coalescer(lambda xs: assistant.generate(xs))
        self.score: Coalescer[ScoreRequest, ScoreResult] = Coalescer(lambda xs: assistant.score(xs))

        async def _reply(items: list[tuple[list[Turn], int]]) -> list[str]:
            return await user.reply([d for d, _ in items], [s for _, s in items])

        self.reply: Coalescer[tuple[list[Turn], int], str] = Coalescer(_reply)
        self.select: Coalescer[SelectionTask, SelectionDecision] = Coalescer(lambda xs: selector.select(xs))
        self.none_policy: str = getattr(selector, "none_policy", "resample")


@dataclasses.dataclass
class _Beam:
    path: list[SearchNode]
    scores: list[float] = dataclasses.field(default_factory=list)
    done: bool = False

    @property
    def value(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


class _SeedSearch:
    """The search of one seed: a deterministic program over journaled role calls."""

    def __init__(self, index: int, seed_text: str, cfg: SearchConfig, roles: _Roles, journal_path: Path):
        self.tree = f"seed-{index:04d}"
        self.seed_text = seed_text
        self.cfg = cfg
        self.roles = roles
        self.sampling = cfg.sampling.params()
        self.nodes: list[SearchNode] = []
        self.requests = 0
        self.tokens = 0
        self.generated = 0  # completion tokens of the assistant (what the latent benchmark budgets)
        self.calls = 0  # model calls actually made (not replayed)
        self.fresh_tokens_out = 0  # assistant tokens generated now (not replayed, not from the cache)
        self.stopped: str | None = None
        self.outcomes: dict[str, int] = {}
        self.journal = io.JsonlJournal(journal_path)
        self.replay = self.journal.load()
        self.step = 0
        self.action_set: list[Tags] | None = None
        if cfg.strategy in LATENT_STRATEGIES and cfg.latent.action_set is not None:
            from sage_dialog.stages.search.actions import load_action_set

            self.action_set = load_action_set(cfg.latent.action_set)

    # -- journaled calls --------------------------------------------------------------------
    async def _call(self, op: str, items: list[Any], run: Callable[[list[Any]], Awaitable[list[Any]]],
                    enc: Callable[[Any], Any], dec: Callable[[Any], Any]) -> list[Any]:
        if not items:
            return []
        i = self.step
        self.step += 1
        if i < len(self.replay):
            rec = self.replay[i]
            if rec.get("op") != op or len(rec.get("out", [])) != len(items):
                raise UserError(f"{self.journal.path}: record {i + 1}: journal does not match this search "
                                f"(expected a {op} of {len(items)} items); use a new output folder")
            return [dec(x) for x in rec["out"]]
        out = await run(items)
        self.calls += 1
        self.journal.append({"step": i, "op": op, "out": [enc(x) for x in out]})
        return out

    def _charge(self, requests: int, tokens: int = 0) -> None:
        self.requests += requests
        self.tokens += tokens

    def _check_budget(self) -> None:
        c = self.cfg
        if (c.budget_requests is not None and self.requests >= c.budget_requests) or (
            c.budget_tokens is not None and self.tokens >= c.budget_tokens
        ):
            raise BudgetExhausted

    async def generate(self, reqs: list[ChatRequest]) -> list[ChatResult]:
        out: list[ChatResult] = await self._call("generate", reqs, self.roles.generate, _enc_chat, _dec_chat)
        self._charge(len(reqs), sum(r.tokens_in + sum(c.tokens_out for c in r.completions) for r in out))
        self.generated += sum(c.tokens_out for r in out for c in r.completions)
        if self.step > len(self.replay):
            self.fresh_tokens_out += sum(c.tokens_out for r in out for c in r.completions if not c.cached)
        return out

    async def score(self, reqs: list[ScoreRequest]) -> list[ScoreResult]:
        """Option log-likelihoods from the assistant model (charged as one request and its prompt each)."""
        out: list[ScoreResult] = await self._call("score", reqs, self.roles.score, _enc_score, _dec_score)
        self._charge(len(reqs), sum(r.tokens_in for r in out))
        return out

    async def reply(self, dialogs: list[list[Turn]], seeds: list[int]) -> list[str]:
        out: list[str] = await self._call("reply", list(zip(dialogs, seeds, strict=True)), self.roles.reply,
                                          lambda s: s, lambda s: s)
        self._charge(len(dialogs))
        return out

    async def select(self, tasks: list[SelectionTask]) -> list[SelectionDecision]:
        out: list[SelectionDecision] = await self._call(
            "select", tasks, self.roles.select, lambda d: d.model_dump(mode="json"), SelectionDecision.model_validate)
        self._charge(len(tasks))
        return out

    # -- tree building ----------------------------------------------------------------------
    def _add(self, role: Literal["user", "assistant"], turn_text: str, parent: SearchNode | None, **kw: Any) -> SearchNode:
        node = SearchNode(id=f"n{len(self.nodes)}", tree=self.tree, parent=parent.id if parent else None,
                          depth=parent.depth + 1 if parent else 0, role=role, text=turn_text, kept=False, **kw)
        self.nodes.append(node)
        return node

    def _assistant_request(self, history: list[SearchNode], seed: int) -> ChatRequest:
        return ChatRequest(messages=assistant_messages([node_turn(n) for n in history], self.cfg.system_prompt),
                           n=1, sampling=dataclasses.replace(self.sampling, seed=seed))

    def _assistant_node(self, result: ChatResult, parent: SearchNode, req: ChatRequest, **extra: Any) -> SearchNode:
        turn = parse_assistant(result.completions[0].text if result.completions else "")
        return self._add("assistant", turn.text, parent, state=turn.state, action=turn.action,
                         sampling={**req.sampling.as_dict(), **extra}, model=self.roles.assistant_name)

    async def _user_replies(self, parents: list[list[SearchNode]], tag: str, **extra: Any) -> list[SearchNode]:
        seeds = [derive_seed(self.cfg.seed, self.tree, tag, p[-1].id) for p in parents]
        texts = await self.reply([[node_turn(n) for n in p] for p in parents], seeds)
        return [self._add("user", t, p[-1], sampling={"seed": s, **extra}, model=self.roles.user_name)
                for p, t, s in zip(parents, texts, seeds, strict=True)]

    async def _lookahead(self, paths: list[list[SearchNode]]) -> list[Turn]:
        """Roll each path (ending with a candidate) forward; return the continuations as judge candidates."""
        conts = [list(p) for p in paths]
        for _ in range(self.cfg.lookahead_depth):
            users = await self._user_replies(conts, "lookahead-user", lookahead=True)
            for c, u in zip(conts, users, strict=True):
                c.append(u)
            reqs = [self._assistant_request(c, derive_seed(self.cfg.seed, self.tree, "lookahead", c[-1].id)) for c in conts]
            res = await self.generate(reqs)
            for c, r, q in zip(conts, res, reqs, strict=True):
                c.append(self._assistant_node(r, c[-1], q, lookahead=True))
        out = []
        for p, c in zip(paths, conts, strict=True):
            cand = p[-1]
            rest = [node_turn(n) for n in c[len(p):]]
            lines = [cand.text] + [
                f"{'User' if t.role == 'user' else 'Assistant'}: "
                + (t.text if t.role == "user" else _render(t))
                for t in rest
            ]
            out.append(Turn(role="assistant", text="\n".join(lines), state=cand.state, action=cand.action))
        return out

    async def _decide(self, beams: list[_Beam]) -> list[tuple[list[SearchNode], SelectionDecision | None]]:
        """Sample, judge and apply the none-policy for each beam; returns (candidates, decision or None=stop)."""
        N = self.cfg.candidates
        result: dict[int, tuple[list[SearchNode], SelectionDecision | None]] = {}
        pending = list(range(len(beams)))
        attempt = 0
        while pending:
            if attempt > 0:
                self._check_budget()
            parent_of = {b: beams[b].path[-1] for b in pending}
            reqs = [self._assistant_request(beams[b].path, derive_seed(self.cfg.seed, self.tree, parent_of[b].id, attempt, j))
                    for b in pending for j in range(N)]
            res = await self.generate(reqs)
            cands: dict[int, list[SearchNode]] = {}
            for k, b in enumerate(pending):
                cands[b] = [self._assistant_node(res[k * N + j], parent_of[b], reqs[k * N + j], attempt=attempt)
                            for j in range(N)]
            shown: dict[int, list[Turn]] = {b: [node_turn(n) for n in cands[b]] for b in pending}
            if self.cfg.strategy == "lookahead":
                flat = [(b, n) for b in pending for n in cands[b]]
                conts = await self._lookahead([[*beams[b].path, n] for b, n in flat])
                for b in pending:
                    shown[b] = [c for (bb, _), c in zip(flat, conts, strict=True) if bb == b]
            tasks = [SelectionTask(history=[node_turn(n) for n in beams[b].path], candidates=shown[b],
                                   seed=derive_seed(self.cfg.seed, self.tree, "judge", parent_of[b].id, attempt))
                     for b in pending]
            decisions = await self.select(tasks)
            still = []
            for b, d in zip(pending, decisions, strict=True):
                self.outcomes[d.outcome] = self.outcomes.get(d.outcome, 0) + 1
                for i, n in enumerate(cands[b]):
                    n.decision = d
                    if d.scores is not None:
                        n.score = d.scores[i]
                prev = result.get(b, ([], None))[0]
                if d.outcome == "none_good":
                    policy = self.roles.none_policy
                    if policy == "resample" and attempt < self.cfg.max_resamples:
                        result[b] = (prev + cands[b], None)
                        still.append(b)
                        continue
                    if policy == "stop":
                        result[b] = (prev + cands[b], None)
                        continue
                    if d.choice is None:  # keep the best: by score if the judge gave any, else the first sample
                        d = d.model_copy(update={"choice": _argmax(d.scores) if d.scores else 0})
                elif d.outcome == "unparsed":
                    d = d.model_copy(update={"choice": 0})
                result[b] = (prev + cands[b], d)
            pending = still
            attempt += 1
        return [result[b] for b in range(len(beams))]

    async def run(self) -> list[SearchNode]:
        if self.cfg.strategy in LATENT_STRATEGIES:
            from sage_dialog.stages.search.actions import decide_latent, run_decisions
            from sage_dialog.stages.search.mcts import decide_mcts

            return await run_decisions(self, decide_latent if self.cfg.strategy == "latent" else decide_mcts)
        root = self._add("user", self.seed_text, None, sampling={})
        beams = [_Beam(path=[root])]
        width = self.cfg.beam_width if self.cfg.strategy == "beam" else 1
        try:
            for turn in range(self.cfg.turns):
                self._check_budget()
                active = [b for b in beams if not b.done]
                if not active:
                    break
                decided = await self._decide(active)
                children: list[tuple[float, int, int, _Beam]] = []
                finished = [b for b in beams if b.done]
                for bi, (beam, (cands, d)) in enumerate(zip(active, decided, strict=True)):
                    if d is None:  # the judge said stop: this dialog ends here
                        beam.done = True
                        finished.append(beam)
                        continue
                    last = cands[-self.cfg.candidates:]  # the final draw's candidates
                    assert d.choice is not None
                    for ci, n in enumerate(last):
                        if width == 1 and ci != d.choice:
                            continue
                        s = d.scores[ci] if d.scores is not None else (1.0 if ci == d.choice else 0.0)
                        child = _Beam(path=[*beam.path, n], scores=[*beam.scores, s])
                        children.append((-child.value, 0 if ci == d.choice else 1, bi * 10_000 + ci, child))
                children.sort(key=lambda x: x[:3])
                beams = finished + [c[3] for c in children[:width]]
                if turn < self.cfg.turns - 1:
                    grow = [b for b in beams if not b.done]
                    users = await self._user_replies([b.path for b in grow], "user")
                    for b, u in zip(grow, users, strict=True):
                        b.path.append(u)
        except BudgetExhausted:
            self.stopped = "budget"
        best = max(beams, key=lambda b: (b.value, len(b.path)))
        if best.done and self.stopped is None:
            self.stopped = "judge"
        for n in best.path:
            n.kept = True
        return self.nodes


def _render(t: Turn) -> str:
    from sage_dialog.core import sac

    return sac.render_turn(t.text, state=t.state, action=t.action)


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


# ---------------------------------------------------------------------------------------------
# the stage


def _run_info(cfg: SearchConfig, seeds: list[str], assistant: Backend, user: UserSimulator,
              selector: Selector) -> dict[str, Any]:
    # the latent options only when they matter: folders of the other strategies resume as before
    config = cfg.model_dump(mode="json", exclude=None if cfg.strategy in LATENT_STRATEGIES else {"latent"})
    return {"config": config, "seeds": io.stable_hash(seeds),
            "assistant": assistant.name, "user": user.name, "selector": selector.name}


async def search_async(assistant: Backend, user: UserSimulator, selector: Selector, seeds: list[str],
                       cfg: SearchConfig, out_dir: str | Path, *, progress: bool = False,
                       index_offset: int = 0, run_seeds: Sequence[str] | None = None) -> dict[str, Any]:
    """The search itself (see :func:`run_search`); returns usage and summary numbers.

    ``run_seeds``: every seed of the run when ``seeds`` are some of them (a Ray worker's unit); the
    folder's ``search.json`` identifies the whole run."""
    out = Path(out_dir)
    if not seeds:
        raise UserError("no seeds to search from")
    if cfg.strategy in LATENT_STRATEGIES:  # fail before anything is written
        if cfg.latent.action_set is not None:
            from sage_dialog.stages.search.actions import load_action_set

            load_action_set(cfg.latent.action_set)
        if not assistant.supports_scoring:
            raise UserError(f"--strategy {cfg.strategy} scores actions with the assistant model; "
                            f"backend {assistant.name} cannot score options")
    info = _run_info(cfg, list(run_seeds or seeds), assistant, user, selector)
    info_path = out / "search.json"
    if info_path.exists():
        old = io.read_json(info_path)
        if old != json.loads(json.dumps(info)):
            changed = sorted(k for k in info if old.get(k) != info[k])
            raise UserError(f"{info_path}: {out} holds a search with a different {', '.join(changed)}; "
                            f"use a new output folder or delete it")
    else:
        io.write_json(info_path, info)
    roles = _Roles(assistant, user, selector)
    trees_dir, journal_dir = out / "trees", out / "journal"
    searches: list[_SeedSearch | None] = []
    for i, s in enumerate(seeds, index_offset):
        tree = trees_dir / f"seed-{i:04d}.jsonl"
        searches.append(None if tree.exists() else _SeedSearch(i, s, cfg, roles, journal_dir / f"seed-{i:04d}.jsonl"))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc="search", unit="seed", initial=sum(x is None for x in searches))
    from sage_dialog.backends import progress as ticks

    meter = ticks.Meter(bar)  # the postfix moves with every request and token while a seed is searched
    stats: dict[str, Any] = {"requests": 0, "tokens": 0, "generated_tokens": 0, "model_calls": 0, "replayed_calls": 0, "outcomes": {},
                             "stopped": {}, "fresh_tokens_out": 0}

    async def one(s: _SeedSearch) -> None:
        try:
            nodes = await s.run()
        finally:
            s.journal.close()
        meta = {"seed": s.seed_text, "strategy": cfg.strategy, "stopped": s.stopped, "requests": s.requests,
                "tokens": s.tokens, "generated_tokens": s.generated}
        write_tree(trees_dir / f"{s.tree}.jsonl", nodes)
        io.write_json(trees_dir / f"{s.tree}.meta.json", meta)
        stats["requests"] += s.requests
        stats["tokens"] += s.tokens
        stats["generated_tokens"] += s.generated
        stats["model_calls"] += s.calls
        stats["fresh_tokens_out"] += s.fresh_tokens_out
        stats["replayed_calls"] += min(len(s.replay), s.step)
        for k, v in s.outcomes.items():
            stats["outcomes"][k] = stats["outcomes"].get(k, 0) + v
        if s.stopped:
            stats["stopped"][s.stopped] = stats["stopped"].get(s.stopped, 0) + 1
        if bar is not None:
            bar.update(1)

    try:
        with ticks.listen(meter):
            await asyncio.gather(*(one(s) for s in searches if s is not None))
        meter.close()
    finally:
        if bar is not None:
            bar.close()
    stats["batches"] = {"generate": roles.generate.batches, "reply": roles.reply.batches,
                        "select": roles.select.batches, "score": roles.score.batches}
    return stats


def load_trees(out_dir: str | Path) -> list[list[SearchNode]]:
    """Every tree of a finished search folder, in seed order."""
    from sage_dialog.stages.search.tree import read_tree

    return [read_tree(p) for p in sorted((Path(out_dir) / "trees").glob("seed-*.jsonl"))]


def best_dialogs(out_dir: str | Path) -> list[Dialog]:
    """The best path of every tree of a search folder, as dialogs."""
    out = []
    for nodes in load_trees(out_dir):
        meta_path = Path(out_dir) / "trees" / f"{nodes[0].tree}.meta.json"
        meta = io.read_json(meta_path) if meta_path.exists() else {}
        path = best_path(nodes)
        scores = [n.score for n in path if n.score is not None]
        if scores:
            meta["score"] = sum(scores) / len(scores)
        out.append(path_dialog(nodes, meta=meta))
    return out


def run_search(assistant: Backend, user: UserSimulator, selector: Selector, seeds: list[str], cfg: SearchConfig,
               out_dir: str | Path, *, progress: bool = False, transcripts: bool = True, index_offset: int = 0) -> Path:
    """Search from every seed and write the results into ``out_dir``; returns ``out_dir``.

    Writes ``trees/seed-NNNN.jsonl`` (every node), ``best.jsonl`` (the best path of each seed as a
    :class:`Dialog`), ``trees.html`` (the tree view of :mod:`.view`), ``transcripts/`` (+ ``full/``) in
    the original SAGE format when the transcript writer is available, and ``manifest.json``. Re-running
    on the same folder resumes.
    """
    out = Path(out_dir)
    manifest = search_manifest(cfg, {"assistant": assistant.name, "user": user.name, "selector": selector.name})
    t0 = time.perf_counter()
    stats = asyncio.run(search_async(assistant, user, selector, seeds, cfg, out, progress=progress,
                                     index_offset=index_offset))
    return finish_search(out, len(seeds), stats, time.perf_counter() - t0, manifest, transcripts=transcripts)


def search_manifest(cfg: SearchConfig, names: dict[str, str]) -> io.Manifest:
    """The manifest a search starts with (``names``: assistant, user and selector names)."""
    return io.new_manifest("search", {**cfg.model_dump(mode="json"), **names}, seed=cfg.seed)


def finish_search(out: Path, n_seeds: int, stats: dict[str, Any], seconds: float, manifest: io.Manifest, *,
                  transcripts: bool = True) -> Path:
    """After every seed's tree is written: ``best.jsonl``, ``trees.html``, transcripts and the manifest."""
    # assistant tokens this run generated (not replayed, not cached) over the search's wall time
    fresh = stats["fresh_tokens_out"]
    stats["tokens_per_s"] = round(fresh / seconds, 1) if seconds > 0 and fresh else None
    dialogs = best_dialogs(out)
    io.write_jsonl(out / "best.jsonl", dialogs)
    from sage_dialog.stages.search.view import write_html

    # the tree view (`sage-dialog trees`), there after every search without an extra step
    write_html({t[0].tree: t for t in load_trees(out)}, out / "trees.html")
    outputs = ["trees", "best.jsonl", "trees.html"]
    if transcripts:
        export_transcripts(out)
        outputs.append("transcripts")
    io.finish_manifest(manifest, out, outputs=outputs,
                       usage={k: stats[k] for k in ("requests", "tokens", "model_calls", "replayed_calls", "batches",
                                                    "tokens_per_s")},
                       summary={"seeds": n_seeds, "nodes": sum(len(t) for t in load_trees(out)),
                                "outcomes": stats["outcomes"], "stopped": stats["stopped"]})
    return out


def decision_counts(manifest: dict[str, Any]) -> dict[str, Any]:
    """The judge's decisions of a finished search (from its ``manifest.json``): how many in all and how
    many chose a candidate, said none was good, or did not parse; and the generation speed."""
    outcomes = manifest.get("summary", {}).get("outcomes", {})
    out: dict[str, Any] = {"decisions": sum(outcomes.values()),
                           **{k: int(outcomes.get(k, 0)) for k in ("chosen", "none_good", "unparsed")}}
    speed = manifest.get("usage", {}).get("tokens_per_s")
    if speed is not None:
        out["tokens_per_s"] = speed
    return out


def export_transcripts(out_dir: str | Path, dest: str | Path | None = None) -> int:
    """Write every tree of a search folder in the original transcript layout (``dest/*.txt`` + ``dest/full/``).

    ``dest`` defaults to ``out_dir/transcripts``. Returns the number of transcripts.
    """
    from sage_dialog.formats.transcripts import dialog_from_tree, write_transcripts

    return write_transcripts(Path(dest) if dest else Path(out_dir) / "transcripts",
                             [dialog_from_tree(nodes) for nodes in load_trees(out_dir)])
