"""Raw dialogs from the sandbox world, mixing good and poor assistant behaviour.

Each assistant turn picks the fitting action with probability ``good_rate``, the state's *tempting*
clumsy action (:data:`world.TEMPTING`) with probability ``tempting_rate``, and any other action
otherwise, so a model trained to imitate the corpus is mediocre and can be improved. The turns carry
plain text only (as raw data would); the gold labels are kept aside in ``Dialog.meta["gold"]`` for
tests and for measuring the annotator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.sandbox import world


@dataclass(frozen=True)
class CorpusConfig:
    """How many dialogs, how long, and how well the assistant in them behaves."""

    n_dialogs: int = 600
    min_exchanges: int = 2
    max_exchanges: int = 4
    good_rate: float = 0.4
    tempting_rate: float = 0.35
    seed: int = 0


def behaviour_action(state: str, rng: random.Random, good_rate: float, tempting_rate: float) -> str:
    """The corpus assistant's (imperfect) choice of action in ``state``."""
    r = rng.random()
    if r < good_rate:
        return world.BEST[state]
    if r < good_rate + tempting_rate:
        return world.TEMPTING[state]
    others = [a for a in world.ACTIONS if a not in (world.BEST[state], world.TEMPTING[state])]
    return rng.choice(others)


def generate_dialog(rng: random.Random, cfg: CorpusConfig, index: int) -> Dialog:
    """One raw dialog: user and assistant turns as text, gold tags in ``meta``."""
    state = rng.choice(world.OPENING_STATES)
    topic = rng.choice(sorted(world.TOPICS))
    noun = world.random_noun(topic, rng)
    turns: list[Turn] = []
    gold: list[dict[str, object]] = []
    reaction: int | None = None
    for _ in range(rng.randint(cfg.min_exchanges, cfg.max_exchanges)):
        turns.append(Turn(role="user", text=world.user_utterance(state, noun, rng, reaction=reaction)))
        gold.append({"key": state, **world.state_tags(state, topic).model_dump(exclude={"extra"})})
        action = behaviour_action(state, rng, cfg.good_rate, cfg.tempting_rate)
        turns.append(Turn(role="assistant", text=world.assistant_reply(action, noun, rng)))
        gold.append({"key": action, **world.action_tags(action, topic).model_dump(exclude={"extra"})})
        f = world.fit(state, action)
        reaction = f if f != 0 else None
        state = world.transition(state, action)
        if rng.random() < 0.5:
            noun = world.random_noun(topic, rng)
    return Dialog(
        id=f"sandbox_{index}",
        turns=turns,
        meta={"source": "sandbox", "seed": cfg.seed, "gold": gold, "reward": world.dialog_reward(turns)},
    )


def generate_corpus(cfg: CorpusConfig | None = None) -> list[Dialog]:
    """``cfg.n_dialogs`` raw dialogs, reproducible from ``cfg.seed``."""
    cfg = cfg or CorpusConfig()
    rng = random.Random(cfg.seed)
    return [generate_dialog(rng, cfg, i) for i in range(cfg.n_dialogs)]
