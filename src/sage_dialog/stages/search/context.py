"""The search of one seed as a context every strategy runs in: journaled calls, budget, tree building.

A strategy (:mod:`.text`, :mod:`.latent`, :mod:`.mcts`) is a module with ``async def run(ctx:
SearchContext) -> list[SearchNode]``; it asks the models only through the context's journaled calls
(:meth:`SearchContext.generate`, :meth:`~SearchContext.score`, :meth:`~SearchContext.reply`,
:meth:`~SearchContext.select`), adds nodes with :meth:`SearchContext.add` (and the helpers built on
it), and checks the per-seed budget with :meth:`SearchContext.check_budget`, which raises
:class:`BudgetExhausted` when it is spent.

Journaled calls: each seed keeps a journal of its completed calls (``journal/<tree>.jsonl``); a seed
searched again replays the journal instead of calling the models and then goes on, so a killed
search resumes to the same tree (every sampling seed is derived from the config seed, the tree and
the node, never from batch composition or timing). The role calls of all seeds go through one
:class:`Roles`, whose :class:`~sage_dialog.backends.coalesce.Coalescer` s merge them into batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from sage_dialog.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    Completion,
    ScoreRequest,
    ScoreResult,
)
from sage_dialog.backends.coalesce import Coalescer
from sage_dialog.core import io, sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.prompts import derive_seed
from sage_dialog.core.schema import SearchNode, SelectionDecision, Tags, Turn
from sage_dialog.roles.protocols import SelectionTask, Selector, UserSimulator
from sage_dialog.roles.rollout import history_messages, parse_assistant
from sage_dialog.stages.search.config import SearchConfig
from sage_dialog.stages.search.tree import node_turn


class BudgetExhausted(Exception):
    """Raised inside a seed's search when its budget is spent; the seed stops with ``stopped: budget``."""


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


class Roles:
    """The shared, coalesced role calls of one search run (every seed's context calls through these)."""

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

    def batches(self) -> dict[str, list[int]]:
        """The size of every real call, by role call."""
        return {"generate": self.generate.batches, "reply": self.reply.batches, "select": self.select.batches,
                "score": self.score.batches}


class SearchContext:
    """The search of one seed: what a strategy reads (``cfg``, ``tree``, ``seed_text``, ``sampling``,
    ``action_set``: the loaded :attr:`LatentConfig.action_set <.config.LatentConfig.action_set>`), the
    calls it makes, the nodes it builds and what it spent."""

    def __init__(self, index: int, seed_text: str, cfg: SearchConfig, roles: Roles, journal_path: Path, *,
                 action_set: list[Tags] | None = None):
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
        self.action_set = action_set  # the closed action set of latent and mcts (None: open vocabulary)

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

    async def generate(self, reqs: list[ChatRequest]) -> list[ChatResult]:
        """Assistant completions (charged as one request each and every prompt and completion token)."""
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
        """The user simulator's next turn after each dialog (one request each)."""
        out: list[str] = await self._call("reply", list(zip(dialogs, seeds, strict=True)), self.roles.reply,
                                          lambda s: s, lambda s: s)
        self._charge(len(dialogs))
        return out

    async def select(self, tasks: list[SelectionTask]) -> list[SelectionDecision]:
        """The judge's decision on each task (one request each)."""
        out: list[SelectionDecision] = await self._call(
            "select", tasks, self.roles.select, lambda d: d.model_dump(mode="json"), SelectionDecision.model_validate)
        self._charge(len(tasks))
        return out

    # -- budget -----------------------------------------------------------------------------
    def check_budget(self) -> None:
        """Raise :class:`BudgetExhausted` when the seed's request or token budget is spent."""
        c = self.cfg
        if (c.budget_requests is not None and self.requests >= c.budget_requests) or (
            c.budget_tokens is not None and self.tokens >= c.budget_tokens
        ):
            raise BudgetExhausted

    def count(self, outcome: str) -> None:
        """Count one judge decision's outcome (``chosen``, ``none_good``, ``unparsed``)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    # -- tree building ----------------------------------------------------------------------
    def add(self, role: Literal["user", "assistant"], turn_text: str, parent: SearchNode | None, **kw: Any) -> SearchNode:
        """A new node of this seed's tree under ``parent`` (``None``: the root); ``kw`` are further node fields."""
        node = SearchNode(id=f"n{len(self.nodes)}", tree=self.tree, parent=parent.id if parent else None,
                          depth=parent.depth + 1 if parent else 0, role=role, text=turn_text, kept=False, **kw)
        self.nodes.append(node)
        return node

    def messages(self, path: Sequence[SearchNode]) -> list[dict[str, str]]:
        """The chat messages the assistant sees after ``path`` (with the search's system prompt)."""
        return history_messages([node_turn(n) for n in path], self.cfg.system_prompt)

    def assistant_request(self, history: list[SearchNode], seed: int) -> ChatRequest:
        """One plain assistant sample after ``history`` with sampling seed ``seed``."""
        return ChatRequest(messages=self.messages(history), n=1, sampling=dataclasses.replace(self.sampling, seed=seed))

    def assistant_node(self, result: ChatResult, parent: SearchNode, req: ChatRequest, **extra: Any) -> SearchNode:
        """The assistant node of a sampled reply (its tags parsed); ``extra`` is recorded with the sampling."""
        turn = parse_assistant(result.completions[0].text if result.completions else "")
        return self.add("assistant", turn.text, parent, state=turn.state, action=turn.action,
                        sampling={**req.sampling.as_dict(), **extra}, model=self.roles.assistant_name)

    async def user_replies(self, parents: list[list[SearchNode]], tag: str, **extra: Any) -> list[SearchNode]:
        """The user simulator's turn after each path, as new nodes (seeds derived from ``tag`` and the node)."""
        seeds = [derive_seed(self.cfg.seed, self.tree, tag, p[-1].id) for p in parents]
        texts = await self.reply([[node_turn(n) for n in p] for p in parents], seeds)
        return [self.add("user", t, p[-1], sampling={"seed": s, **extra}, model=self.roles.user_name)
                for p, t, s in zip(parents, texts, seeds, strict=True)]

    async def lookahead(self, paths: list[list[SearchNode]]) -> list[Turn]:
        """Roll each path (ending with a candidate) forward ``lookahead_depth`` turns; return the
        continuations as judge candidates (the candidate's reply, then ``User: ..`` / ``Assistant: ..`` lines)."""
        conts = [list(p) for p in paths]
        for _ in range(self.cfg.lookahead_depth):
            users = await self.user_replies(conts, "lookahead-user", lookahead=True)
            for c, u in zip(conts, users, strict=True):
                c.append(u)
            reqs = [self.assistant_request(c, derive_seed(self.cfg.seed, self.tree, "lookahead", c[-1].id)) for c in conts]
            res = await self.generate(reqs)
            for c, r, q in zip(conts, res, reqs, strict=True):
                c.append(self.assistant_node(r, c[-1], q, lookahead=True))
        out = []
        for p, c in zip(paths, conts, strict=True):
            cand = p[-1]
            rest = [node_turn(n) for n in c[len(p):]]
            lines = [cand.text] + [
                f"{'User' if t.role == 'user' else 'Assistant'}: "
                + (t.text if t.role == "user" else sac.render_turn(t.text, state=t.state, action=t.action))
                for t in rest
            ]
            out.append(Turn(role="assistant", text="\n".join(lines), state=cand.state, action=cand.action))
        return out


def argmax(xs: Sequence[float]) -> int:
    """The index of the largest value (ties: the earlier one)."""
    return max(range(len(xs)), key=lambda i: xs[i])
