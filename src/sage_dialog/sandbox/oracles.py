"""Oracle roles for the sandbox world: they read the text and consult the ground truth.

Each class here is an *oracle*: a stand-in for an LLM role that knows the world's rules exactly. They
implement the same protocols as the LLM-backed roles (:mod:`sage_dialog.roles.protocols`), so every stage runs
unchanged on either, and the sandbox can measure what a stage does with a perfect judge. Labels are
recovered from utterance text through the world's lexicon (:func:`world.read_state`,
:func:`world.read_action`, :func:`world.read_topic`); no hidden id is ever consulted.

* :class:`OracleAnnotator` - tags every turn (``annotator``)
* :class:`OracleSelector` - picks the best of N candidate replies (``selector``)
* :class:`OraclePairwiseJudge` - judges two dialogs by their ground-truth reward (``pairwise``)
* :class:`OracleUserSimulator` - plays the user with the world's dynamics (``user``)
* :class:`OracleActionClassifier` - which action a reply realises (for steering compliance)
* :class:`OracleReward` - the ground-truth reward of any dialog

:func:`oracle_for` builds one by role name; a config field naming a role accepts ``"oracle"``.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any, Literal

from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, SelectionDecision, Tags, Turn, Verdict
from sage_dialog.roles.protocols import AnnotationResult, PairTask, SelectionTask
from sage_dialog.sandbox import rules, world


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


def _reply_text(turn: Turn) -> str:
    """The reply of an assistant turn without tag blocks (tags never count as evidence)."""
    return sac.strip(turn.text)


class OracleActionClassifier:
    """Oracle: which of the world's actions a reply realises, read from its text (None if none)."""

    name = "oracle-action-classifier"

    def classify(self, texts: Sequence[str]) -> list[str | None]:
        return [world.read_action(t) for t in texts]

    def classify_tags(self, texts: Sequence[str]) -> list[Tags | None]:
        """The action as tags (topic read from the same text), or None."""
        out: list[Tags | None] = []
        for t in texts:
            a = world.read_action(t)
            out.append(world.action_tags(a, world.read_topic(t)) if a else None)
        return out


class OracleReward:
    """Oracle: the ground-truth reward of a dialog (mean fit of the replies + final valence / 2)."""

    name = "oracle-reward"

    def __init__(self, rules: str = "standard"):
        self.rules = _preset(rules)

    def __call__(self, dialog: Dialog | Sequence[Turn]) -> float:
        return rules.dialog_reward(self.rules, dialog.turns if isinstance(dialog, Dialog) else dialog)

    def turn_rewards(self, turns: Sequence[Turn]) -> list[float]:
        """The reward spread over the assistant turns (they sum to the dialog's reward)."""
        return rules.turn_rewards(self.rules, turns)

    def state_key(self, turns: Sequence[Turn]) -> str | None:
        """The world state the last user turn of ``turns`` expresses (for state-level credit)."""
        return OracleSelector._state(turns)

    def score(self, dialog: Dialog | Sequence[Turn]) -> world.DialogScore:
        return world.score_turns(dialog.turns if isinstance(dialog, Dialog) else dialog)


class OracleAnnotator:
    """Oracle annotator: motivation, emotion and topic of every turn, read from its text.

    User turns get the state their emotion words express, assistant turns the action their cue
    phrases realise. A turn without a topic noun takes the topic of the nearest turn that has one
    (the annotator sees the whole dialog, as the LLM one does). A turn whose label cannot be read
    makes the dialog a reject, with the reason.
    """

    name = "oracle-annotator"

    async def annotate(self, dialogs: Sequence[Dialog]) -> list[AnnotationResult]:
        return [self._one(d) for d in dialogs]

    def _one(self, dialog: Dialog) -> AnnotationResult:
        topics = [world.read_topic(t.text) for t in dialog.turns]
        known = [i for i, t in enumerate(topics) if t]
        tags: list[Tags] = []
        for i, turn in enumerate(dialog.turns):
            topic = topics[i]
            if topic is None and known:
                topic = topics[min(known, key=lambda j: abs(j - i))]
            if turn.role == "user":
                state = world.read_state(turn.text)
                if state is None:
                    return AnnotationResult(tags=None, error=f"turn {i}: no emotion word of the world in the user text")
                tags.append(world.state_tags(state, topic))
            elif turn.role == "assistant":
                action = world.read_action(turn.text)
                if action is None:
                    return AnnotationResult(tags=None, error=f"turn {i}: the reply realises no action of the world")
                tags.append(world.action_tags(action, topic))
            else:
                tags.append(Tags())
        return AnnotationResult(tags=tags, raw=["oracle"])


class OracleSelector:
    """Oracle N-way judge: keeps the candidate whose action fits the user's state best.

    A candidate's score is its fit (+1/0/-1) plus half the valence of the state it moves the user to,
    a one-step look at the consequences. Candidates are shown in an order shuffled by the task's
    seed and ties go to the one shown first, so the oracle has the same position handling as the LLM
    judge. ``none_good`` is returned when no candidate realises any action at all.
    """

    name = "oracle-selector"

    def __init__(self, rules: str = "standard"):
        self.rules = _preset(rules)

    async def select(self, tasks: Sequence[SelectionTask]) -> list[SelectionDecision]:
        return [self._one(t) for t in tasks]

    @staticmethod
    def _state(history: Sequence[Turn]) -> str | None:
        for turn in reversed(history):
            if turn.role == "user":
                s = world.read_state(turn.text)
                if s:
                    return s
        return None

    def candidate_score(self, state: str | None, text: str, pending: bool = False) -> float:
        action = world.read_action(text)
        f = world.fit(state, action)
        nxt = rules.step(self.rules, state, action, pending).state if state else None
        return f + (world.STATES[nxt].valence / 2 if nxt else 0.0)

    def _one(self, task: SelectionTask) -> SelectionDecision:
        n = len(task.candidates)
        order = list(range(n))
        random.Random(task.seed).shuffle(order)
        state = self._state(task.history)
        pending = rules.replay(self.rules, task.history).pending
        scores = [self.candidate_score(state, _reply_text(c), pending) for c in task.candidates]
        if n == 0 or all(world.read_action(_reply_text(c)) is None for c in task.candidates):
            return SelectionDecision(outcome="none_good", order=order, raw_output="No good one",
                                     scores=scores or None, judge=self.name, mode="oracle")
        shown_best = max(range(n), key=lambda k: (scores[order[k]], -k))
        return SelectionDecision(outcome="chosen", choice=order[shown_best], order=order,
                                 raw_output=f"Response {shown_best + 1} is better", scores=scores,
                                 judge=self.name, mode="oracle")


class OraclePairwiseJudge:
    """Oracle pairwise judge: the dialog with the higher ground-truth reward wins.

    Rewards closer than ``tie_margin`` are a tie. For ``unit="turn"`` tasks the last assistant turns
    are compared by their fit in the shared state. Verdicts are order-independent by construction.
    """

    name = "oracle-pairwise"

    def __init__(self, tie_margin: float = 1e-9, rules: str = "standard"):
        self.tie_margin = tie_margin
        self.rules = _preset(rules)

    async def compare(self, tasks: Sequence[PairTask]) -> list[Verdict]:
        return [self._one(t) for t in tasks]

    def _value(self, turns: Sequence[Turn], unit: str) -> float:
        if unit == "turn":
            last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].role == "assistant"), None)
            if last is None:
                return float(world.UNKNOWN_ACTION_FIT)
            before = turns[:last]
            pending = rules.replay(self.rules, before).pending
            return OracleSelector(self.rules).candidate_score(OracleSelector._state(before), _reply_text(turns[last]),
                                                              pending)
        return rules.dialog_reward(self.rules, turns)

    def _one(self, task: PairTask) -> Verdict:
        ra, rb = self._value(task.a, task.unit), self._value(task.b, task.unit)
        winner: Any = "tie" if abs(ra - rb) <= self.tie_margin else ("a" if ra > rb else "b")
        shown_first: Literal["a", "b"] = "b" if task.swap else "a"
        if winner == "tie":
            raw = "Tie"
        else:
            raw = f"Dialog {'A' if (winner == shown_first) else 'B'} is better"
        words = lambda turns: sum(len(_reply_text(t).split()) for t in turns if t.role == "assistant")  # noqa: E731
        return Verdict(seed=task.seed, model_a=task.model_a, model_b=task.model_b, judge=self.name,
                       shown_first=shown_first, winner=winner, parsed=True, raw_output=raw,
                       probs={"a": ra, "b": rb}, unit="turn" if task.unit == "turn" else "dialog",
                       turn=task.turn, length_a=words(task.a), length_b=words(task.b))


class OracleUserSimulator:
    """Oracle (scripted) user: reacts to the assistant by the world's dynamics, reading the text.

    It reads its own state from its last utterance and the assistant's action from the last reply,
    moves to :func:`world.transition` of them, and says so in a fresh templated utterance on the same
    topic (opening with a reaction when the reply fitted or was clumsy). Deterministic given the
    dialog text and the seed.
    """

    name = "oracle-user"

    def __init__(self, seed: int = 0, default_state: str = "sad", rules: str = "standard"):
        self.seed = seed
        self.default_state = default_state
        self.rules = _preset(rules)

    async def reply(self, dialogs: Sequence[list[Turn]], seeds: Sequence[int] | None = None) -> list[str]:
        seeds = seeds if seeds is not None else [0] * len(dialogs)
        return [self.next_utterance(d, s) for d, s in zip(dialogs, seeds, strict=True)]

    def next_utterance(self, turns: Sequence[Turn], seed: int = 0) -> str:
        state = OracleSelector._state(turns) or self.default_state
        last_i = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].role == "assistant"), None)
        last = turns[last_i] if last_i is not None else None
        action = world.read_action(_reply_text(last)) if last is not None else None
        pending = rules.replay(self.rules, turns[:last_i]).pending if last_i is not None else False
        users = [t for t in turns if t.role == "user"]
        noun = next((n for n in (world.read_noun(t.text) for t in reversed(users)) if n), None)
        rng = random.Random(_stable_seed(self.seed, seed, *(t.text for t in turns)))
        if noun is None:
            noun = world.random_noun(rng.choice(sorted(world.TOPICS)), rng)
        elif rng.random() < 0.5:  # same topic, maybe another noun of it
            noun = world.random_noun(world.read_topic(noun) or "work", rng)
        f = world.fit(state, action)
        nxt = rules.step(self.rules, state, action, pending).state
        return world.user_utterance(nxt, noun, rng, reaction=f if f != 0 else None)


def _preset(name: str) -> str:
    return rules.check_preset(name)


ROLES = ("annotator", "selector", "pairwise", "user", "action", "reward")


def oracle_for(role: str, **kw: Any) -> Any:
    """The sandbox oracle for ``role`` (``annotator``, ``selector``, ``pairwise``, ``user``, plus
    ``action`` and ``reward``). Keyword arguments go to the oracle's constructor."""
    factories: dict[str, Any] = {
        "annotator": OracleAnnotator,
        "selector": OracleSelector,
        "pairwise": OraclePairwiseJudge,
        "user": OracleUserSimulator,
        "action": OracleActionClassifier,
        "reward": OracleReward,
    }
    if role not in factories:
        raise UserError(f"no sandbox oracle for role {role!r}; roles: {', '.join(ROLES)}")
    return factories[role](**kw)
