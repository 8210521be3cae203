"""The sandbox world: a small, fully specified conversational world in which SAGE can be measured.

Everything a real deployment leaves to people is written down here, so the whole loop runs offline
and its effect can be measured exactly:

* **User states** (:data:`STATES`): a motivation and an emotion each, with a *valence* (0 bad,
  1 hopeful, 2 happy).
* **Assistant actions** (:data:`ACTIONS`): a motivation and an emotion each.
* **Topics** (:data:`TOPICS`): each with a few nouns the user may mention.
* **Ground truth** (:data:`FIT`): how fitting each action is in each user state (+1 fitting, 0 fine,
  -1 clumsy), and **user dynamics** (:func:`transition`): a fitting action moves the user to a better
  state, a clumsy one to a worse one, so a choice has consequences turns later.
* **Utterance generators** (:func:`user_utterance`, :func:`assistant_reply`): templates with enough
  lexical variety that the *text* carries the labels (an emotion adjective, a motivation tail, a
  topic noun; an action's cue phrases). The readers (:func:`read_state`, :func:`read_action`,
  :func:`read_topic`) recover the labels from text alone, by matching the world's lexicon: no hidden
  id travels with a turn.
* **Reward** (:func:`dialog_reward`): the ground-truth quality of any dialog, computed from its text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sage_dialog.core import sac
from sage_dialog.core.schema import Dialog, Tags, Turn


@dataclass(frozen=True)
class UserState:
    """A user state: what the user wants (motivation), how they feel (emotion), how good it is."""

    key: str
    motivation: str
    emotion: str
    valence: int
    adjectives: tuple[str, ...]  # emotion words that mark this state in user text
    tails: tuple[str, ...]  # motivation sentences that may follow


@dataclass(frozen=True)
class Action:
    """An assistant action (motivation and emotion) and the reply templates that realise it."""

    key: str
    motivation: str
    emotion: str
    cues: tuple[str, ...]  # phrases that mark this action in reply text (each template has one)
    templates: tuple[str, ...]  # with a {noun} slot


STATES: dict[str, UserState] = {
    s.key: s
    for s in (
        UserState("sad", "venting", "sad", 0, ("sad", "down", "heartbroken", "miserable", "gloomy"),
                  ("I just need to let it out.", "I needed to say it to someone.", "It all feels heavy.")),
        UserState("anxious", "seeking reassurance", "anxious", 0,
                  ("nervous", "anxious", "worried", "scared", "tense"),
                  ("Will it be alright?", "What if it goes wrong?", "I keep thinking about it.")),
        UserState("angry", "complaining", "angry", 0, ("furious", "angry", "annoyed", "fed up", "mad"),
                  ("It is so unfair.", "Nobody even listened.", "I can't believe it.")),
        UserState("hopeful", "planning", "hopeful", 1,
                  ("hopeful", "optimistic", "motivated", "determined", "positive"),
                  ("What should I do next?", "I want to get it right.", "Where do I start?")),
        UserState("happy", "sharing news", "happy", 2, ("thrilled", "happy", "excited", "overjoyed", "delighted"),
                  ("Guess what happened!", "I had to tell you.", "Best day in a while!")),
    )
}

# Every template states its action first (the cue) and names the topic noun last, so the action a
# reply realises is decided by its first words.
ACTIONS: dict[str, Action] = {
    a.key: a
    for a in (
        Action("comfort", "comfort", "gentle", ("sorry", "here for you", "hug"), (
            "I'm so sorry about your {noun}.",
            "Sorry, that sounds painful with the {noun}.",
            "I'm here for you with the {noun}.",
            "Sending you a hug about the {noun}.",
        )),
        Action("reassure", "reassurance", "calm", ("will be okay", "you can handle", "take a breath"), (
            "Take a breath, it will be okay with the {noun}.",
            "You can handle the {noun}.",
            "It will be okay with the {noun}.",
            "Take a breath about the {noun}.",
        )),
        Action("validate", "validation", "earnest", ("not fair", "every right", "makes sense"), (
            "That's not fair about the {noun}.",
            "You have every right to be upset about the {noun}.",
            "It makes sense you feel that way about the {noun}.",
            "Your reaction makes sense with the {noun}.",
        )),
        Action("advise", "advice", "encouraging", ("you could try", "next step", "make a list"), (
            "You could try one small thing with the {noun}.",
            "A good next step is to talk about the {noun}.",
            "Make a list for the {noun}.",
            "You could try asking a friend about the {noun}.",
        )),
        Action("celebrate", "celebration", "cheerful", ("congratulations", "amazing", "well done"), (
            "Congratulations on the {noun}!",
            "Well done with the {noun}!",
            "That's amazing news about your {noun}!",
            "Amazing, well done on the {noun}!",
        )),
        Action("joke", "humor", "playful", ("haha", "funny", "at least"), (
            "Haha, at least you have the {noun}!",
            "Funny how it's always the {noun}, haha.",
            "At least it's a good story about the {noun}.",
            "Haha, classic {noun}.",
        )),
    )
}

TOPICS: dict[str, tuple[str, ...]] = {
    "work": ("job", "boss", "office", "shift"),
    "school": ("exam", "class", "grades", "homework"),
    "family": ("sister", "parents", "brother", "mom"),
    "pet": ("dog", "cat", "puppy", "kitten"),
    "health": ("doctor", "back", "knee", "checkup"),
}

# Ground truth: how fitting each action is in each state (+1 fitting, 0 fine, -1 clumsy).
FIT: dict[str, dict[str, int]] = {
    "sad": {"comfort": 1, "reassure": 0, "validate": 0, "advise": -1, "celebrate": -1, "joke": -1},
    "anxious": {"comfort": 0, "reassure": 1, "validate": 0, "advise": 0, "celebrate": -1, "joke": -1},
    "angry": {"comfort": 0, "reassure": -1, "validate": 1, "advise": -1, "celebrate": -1, "joke": -1},
    "hopeful": {"comfort": -1, "reassure": 0, "validate": -1, "advise": 1, "celebrate": 0, "joke": 0},
    "happy": {"comfort": -1, "reassure": -1, "validate": -1, "advise": 0, "celebrate": 1, "joke": 0},
}
BEST: dict[str, str] = {s: max(row, key=lambda a: row[a]) for s, row in FIT.items()}
# The clumsy action a careless assistant reaches for in each state (the corpus over-uses it).
TEMPTING: dict[str, str] = {"sad": "advise", "anxious": "joke", "angry": "reassure", "hopeful": "comfort",
                            "happy": "reassure"}
# Where a clumsy action leaves a user who is already in a bad state.
_CLUMSY_BAD: dict[str, str] = {"joke": "angry", "celebrate": "angry", "reassure": "angry", "advise": "sad",
                               "comfort": "sad", "validate": "anxious"}
OPENING_STATES = ("sad", "anxious", "angry", "hopeful")
UNKNOWN_ACTION_FIT = -1  # a reply that realises no action of the world counts as clumsy

_OPENERS = ("", "", "Hi. ", "Hey, ", "So, ", "Honestly, ", "Well, ")
_USER_BODIES = (
    "I feel {adj} about my {noun}.",
    "My {noun} makes me so {adj}.",
    "I'm {adj} about the {noun}.",
    "Today I am really {adj} because of my {noun}.",
    "It's the {noun} again and I'm {adj}.",
    "The {noun} thing has me {adj}.",
)
_REACT_GOOD = ("Thanks.", "That helps.", "Thank you.", "Yeah.")
_REACT_BAD = ("Hmm.", "Not really.", "Okay...", "Um.")
_QUESTIONS = ("How are you holding up?", "Tell me more?", "What happened?", "How does that sound?", "")


def fit(state: str | None, action: str | None) -> int:
    """Ground-truth fit of ``action`` in ``state`` (unknown action: clumsy; unknown state: 0)."""
    if action is None or action not in ACTIONS:
        return UNKNOWN_ACTION_FIT
    if state is None or state not in FIT:
        return 0
    return FIT[state][action]


def transition(state: str, action: str | None) -> str:
    """User dynamics: the state the user is in after the assistant took ``action`` in ``state``."""
    f = fit(state, action)
    v = STATES[state].valence
    if f > 0:
        return "hopeful" if v == 0 else "happy"
    if f == 0:
        return state
    if v == 2:
        return "hopeful"
    if v == 1:
        return "anxious"
    return _CLUMSY_BAD.get(action or "", state)


# ---------------------------------------------------------------------------------------------
# tags


def state_tags(state: str, topic: str | None) -> Tags:
    s = STATES[state]
    return Tags(motivation=s.motivation, emotion=s.emotion, topics=[topic] if topic else [])


def action_tags(action: str, topic: str | None) -> Tags:
    a = ACTIONS[action]
    return Tags(motivation=a.motivation, emotion=a.emotion, topics=[topic] if topic else [])


_STATE_BY_LABEL = {(s.motivation, s.emotion): k for k, s in STATES.items()}
_ACTION_BY_LABEL = {(a.motivation, a.emotion): k for k, a in ACTIONS.items()}


def state_from_tags(tags: Tags | None) -> str | None:
    """The state key a tag block names, or None (matched on motivation and emotion)."""
    if tags is None:
        return None
    return _STATE_BY_LABEL.get((tags.motivation or "", tags.emotion or ""))


def action_from_tags(tags: Tags | None) -> str | None:
    """The action key a tag block names, or None."""
    if tags is None:
        return None
    return _ACTION_BY_LABEL.get((tags.motivation or "", tags.emotion or ""))


# ---------------------------------------------------------------------------------------------
# generators


def user_utterance(state: str, noun: str, rng: random.Random, *, reaction: int | None = None) -> str:
    """A user utterance in ``state`` about ``noun``; ``reaction`` (+1/-1) opens with a reaction."""
    s = STATES[state]
    body = rng.choice(_USER_BODIES).format(adj=rng.choice(s.adjectives), noun=noun)
    parts = []
    if reaction is not None and reaction > 0:
        parts.append(rng.choice(_REACT_GOOD))
    elif reaction is not None and reaction < 0:
        parts.append(rng.choice(_REACT_BAD))
    else:
        opener = rng.choice(_OPENERS)
        if opener:  # "I" stays capital, any other first word is lowered after the opener
            body = opener + (body if re.match(r"I\b|I'", body) else body[0].lower() + body[1:])
    parts.append(body)
    if rng.random() < 0.6:
        parts.append(rng.choice(s.tails))
    return " ".join(parts)


def assistant_reply(action: str, noun: str, rng: random.Random) -> str:
    """A reply realising ``action`` about ``noun`` (sometimes with a bridging question)."""
    text = rng.choice(ACTIONS[action].templates).format(noun=noun)
    q = rng.choice(_QUESTIONS)
    return f"{text} {q}".strip()


def random_noun(topic: str, rng: random.Random) -> str:
    return rng.choice(TOPICS[topic])


def seed_openings(n: int, seed: int) -> list[str]:
    """``n`` opening user utterances (self-play seeds), drawn with ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        state = rng.choice(OPENING_STATES)
        topic = rng.choice(sorted(TOPICS))
        out.append(user_utterance(state, random_noun(topic, rng), rng))
    return out


# ---------------------------------------------------------------------------------------------
# readers: labels from text, through the lexicon only


def _pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    alts = sorted((re.escape(p) for p in phrases), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alts) + r")\b", re.IGNORECASE)


_STATE_RE = {k: _pattern(s.adjectives) for k, s in STATES.items()}
_ACTION_RE = {k: _pattern(a.cues) for k, a in ACTIONS.items()}
_NOUN_TOPIC = {n: t for t, nouns in TOPICS.items() for n in nouns}
_NOUN_RE = _pattern(list(_NOUN_TOPIC))


def _vote(text: str, patterns: dict[str, re.Pattern[str]]) -> str | None:
    counts = {k: len(p.findall(text)) for k, p in patterns.items()}
    best = max(counts, key=lambda k: counts[k])
    if counts[best] == 0:
        return None
    if sum(1 for c in counts.values() if c == counts[best]) > 1:
        return None  # ambiguous text reads as no label
    return best


def read_state(text: str) -> str | None:
    """The user state a user utterance expresses (by its emotion words), or None."""
    return _vote(sac.strip(text), _STATE_RE)


def read_action(text: str) -> str | None:
    """The action a reply realises (by its cue phrases; tag blocks are ignored), or None."""
    return _vote(sac.strip(text), _ACTION_RE)


def read_noun(text: str) -> str | None:
    """The last topic noun mentioned in ``text``, or None."""
    found = _NOUN_RE.findall(sac.strip(text))
    return found[-1].lower() if found else None


def read_topic(text: str) -> str | None:
    noun = read_noun(text)
    return _NOUN_TOPIC[noun] if noun else None


# ---------------------------------------------------------------------------------------------
# ground-truth reward


@dataclass
class DialogScore:
    """Ground-truth evaluation of one dialog: per-turn fits, the final user state, the reward."""

    fits: list[int]
    states: list[str | None]
    actions: list[str | None]
    final_state: str | None
    reward: float


def score_turns(turns: Sequence[Turn]) -> DialogScore:
    """Score a dialog from its text: each assistant reply's fit in the state the user was in, plus
    the valence of the state the last reply leaves the user in.

    ``reward = mean(fit over assistant turns) + valence(final state) / 2``, in [-1, 2].
    """
    state: str | None = None
    fits: list[int] = []
    states: list[str | None] = []
    actions: list[str | None] = []
    final: str | None = None
    for t in turns:
        if t.role == "user":
            state = read_state(t.text) or state
            final = state
        elif t.role == "assistant":
            action = read_action(t.text)
            states.append(state)
            actions.append(action)
            fits.append(fit(state, action))
            final = transition(state, action) if state is not None else None
    mean_fit = sum(fits) / len(fits) if fits else 0.0
    valence = STATES[final].valence if final else 0
    return DialogScore(fits, states, actions, final, mean_fit + valence / 2)


def dialog_reward(dialog: Dialog | Sequence[Turn]) -> float:
    """Ground-truth reward of a dialog (see :func:`score_turns`)."""
    turns = dialog.turns if isinstance(dialog, Dialog) else dialog
    return score_turns(turns).reward
