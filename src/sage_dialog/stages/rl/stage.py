"""The ``rl`` stage: ``run(settings, *, inputs, out) -> Result``.

The policy plays whole dialogs from seed openings against the user simulator (:mod:`.rollout`),
each dialog is rewarded (:class:`Rewarder`), and TRL's GRPOTrainer takes a step with the credit
level of the settings (:mod:`.trainer`, :mod:`.credit`). Every dialog played is journaled to
``rollouts.jsonl`` (dialog records: the turns with their tags, reward, per-turn rewards and
advantages' inputs, step), checkpoints go to ``out/checkpoint-N`` and the final policy (LoRA adapter
or full model, with its tokenizer and chat template) to ``out``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.stages.base import StageResult
from sage_dialog.stages.rl.rollout import PolicyPlayer, Rollout
from sage_dialog.stages.rl.settings import Settings
from sage_dialog.stages.rl.trainer import STATE_KEYS, TURN_REWARDS, TURN_SPANS, turn_credit_trainer_class
from sage_dialog.train.config import ModelSection

log = logging.getLogger(__name__)
ROLLOUTS = "rollouts.jsonl"
REWARD_KEY = "sage_reward"


@dataclass
class Inputs:
    """What the stage reads: the starting policy, the seed openings, the response cache."""

    model: ModelSection
    seeds: Path
    cache: str | None = None


class Result(StageResult):
    """Outputs: ``model`` (the trained policy folder), ``rollouts``. Counts: steps, dialogs,
    interactions (user-simulator turns), judge_calls, tokens. Quality: reward of the first and last
    steps, final KL."""


class Rewarder:
    """Per-turn rewards of played dialogs from the ground truth of a world or from a pairwise judge."""

    def __init__(self, settings: Settings, pool: Any, player: PolicyPlayer, seed: int):
        from sage_dialog.roles.factory import is_oracle, make_pairwise_judge, oracle_for_spec

        r = settings.reward
        self.settings = r
        self.judge_calls = 0
        if r.source == "ground_truth":
            if not is_oracle(r.oracle):
                raise UserError(f"rl.reward.oracle: {r.oracle!r} is not an oracle spec (oracle or oracle:VARIANT); "
                                "a model's judgement is reward.source: judge")
            self.oracle = oracle_for_spec("reward", r.oracle)
        else:
            self.judge = make_pairwise_judge(r.judge, pool)
            self.references: dict[int, list[Any]] = {}
        self.player = player
        self.seed = seed

    def references_for(self, model: Any, openings: Sequence[tuple[int, str]], user: Any) -> None:
        """The starting policy's dialog from each seed (played once, before any step): the judge's reference."""
        missing = [(sid, text) for sid, text in dict(openings).items() if sid not in self.references]
        if missing:
            for r in self.player.play(model, missing, user, seed=self.seed + 991):
                self.references[r.seed_id] = r.turns

    def turn_rewards(self, rollouts: Sequence[Rollout]) -> list[list[float]]:
        if self.settings.source == "ground_truth":
            return [self.oracle.turn_rewards(r.turns) for r in rollouts]
        from sage_dialog.roles.protocols import PairTask

        tasks = []
        for i, r in enumerate(rollouts):
            ref = self.references[r.seed_id]
            for swap in (False, True):
                tasks.append(PairTask(seed=f"{r.seed_id}-{i}", model_a="policy", model_b="reference", a=r.turns,
                                      b=ref, swap=swap))
        verdicts = asyncio.run(self.judge.compare(tasks))
        self.judge_calls += len(tasks)
        out = []
        for i, r in enumerate(rollouts):
            pair = verdicts[2 * i: 2 * i + 2]
            score = sum(1.0 if v.winner == "a" else 0.5 if v.winner == "tie" else 0.0 for v in pair) / 2
            n = len(r.assistant_turns)
            out.append([0.0] * (n - 1) + [score])
        return out


def _seed_rows(path: Path) -> list[tuple[int, str]]:
    from sage_dialog.stages.search.seeds import read_seed_file

    seeds = read_seed_file(path)
    if not seeds:
        raise UserError(f"{path}: no seed openings")
    return list(enumerate(seeds))


def grpo_args(settings: Settings, out: Path, device: str) -> Any:
    """TRL's GRPOConfig for the settings: one generation batch per optimizer step."""
    import importlib.util

    from trl import GRPOConfig

    from sage_dialog.train.common import precision_args
    from sage_dialog.train.config import TrainSection

    t = settings.train
    prec = precision_args(TrainSection(precision=t.precision, gradient_checkpointing=t.gradient_checkpointing,
                                       device=t.device), device)
    report: list[str] = [r for r in t.report_to if importlib.util.find_spec(r)]
    return GRPOConfig(
        output_dir=str(out), max_steps=t.steps, learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio, max_grad_norm=t.max_grad_norm, seed=t.seed, data_seed=t.seed,
        per_device_train_batch_size=t.prompts_per_step * t.group_size, gradient_accumulation_steps=1,
        num_generations=t.group_size, beta=t.beta, temperature=settings.rollout.temperature,
        max_completion_length=settings.rollout.max_tokens * settings.rollout.turns,
        scale_rewards="group" if settings.scale == "group" else "none", logging_steps=t.logging_steps,
        logging_first_step=True, save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        report_to=report or ["none"], disable_tqdm=True, remove_unused_columns=False, shuffle_dataset=True,
        **prec,
    )


def run(settings: Settings, *, inputs: Inputs, out: Path, quiet: bool = True) -> Result:
    """Train the policy online (see the module docstring); return what was made."""
    from sage_dialog.core.io import check_paths

    check_paths(inputs=[inputs.seeds], folders=[out])
    openings = _seed_rows(inputs.seeds)
    t0 = time.perf_counter()
    if settings.threads is not None:
        from sage_dialog.core import threads

        threads.apply(settings.threads)
    from datasets import Dataset

    from sage_dialog.core.io import finish_manifest, new_manifest, sha256_path
    from sage_dialog.roles.factory import BackendPool, make_user
    from sage_dialog.train.common import (
        align_eos,
        check_target_modules,
        load_model,
        load_tokenizer,
        lora_config,
        resolve_device,
        resume_checkpoint,
        save_template,
    )
    from sage_dialog.train.config import TrainSection

    device = resolve_device(TrainSection(device=settings.train.device))
    tokenizer, template = load_tokenizer(inputs.model)
    model = load_model(inputs.model, settings.adapter, device)
    check_target_modules(model, settings.adapter)
    align_eos(tokenizer, model, template)
    ro = settings.rollout
    player = PolicyPlayer(tokenizer, turns=ro.turns, temperature=ro.temperature, top_k=ro.top_k,
                          max_tokens=ro.max_tokens, loss_on=settings.loss_on,
                          key_mode=settings.state_key, system_prompt=ro.system_prompt)
    pool = BackendPool(inputs.cache)
    user = make_user(ro.user, pool, persona=ro.user_persona, seed=settings.train.seed)
    rewarder = Rewarder(settings, pool, player, settings.train.seed)
    by_text = {text: sid for sid, text in openings}
    journal = Journal(out / ROLLOUTS, settings.train.group_size)
    tally = {"dialogs": 0, "interactions": 0, "judge_calls": 0, "tokens": 0, "sequence_tokens": 0, "gen_seconds": 0.0}

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        pairs = [(by_text.get(p[-1]["content"], -1), p[-1]["content"]) for p in prompts]
        policy = trainer.accelerator.unwrap_model(trainer.model)
        step = trainer.state.global_step
        if rewarder.settings.source == "judge":
            rewarder.references_for(policy, pairs, user)
        g0 = time.perf_counter()
        rollouts = player.play(policy, pairs, user, seed=settings.train.seed * 100_003 + step * 7919
                               + trainer.accelerator.process_index)
        tally["gen_seconds"] += time.perf_counter() - g0
        calls_before = rewarder.judge_calls
        rewards = rewarder.turn_rewards(rollouts)
        calls = rewarder.judge_calls - calls_before
        played, scored = rollouts, rewards
        if trainer.accelerator.num_processes > 1:  # every rank plays its own slice: count and journal them all
            from accelerate.utils import gather_object

            both = gather_object([(r, rw) for r, rw in zip(rollouts, rewards, strict=True)])
            played, scored = [b[0] for b in both], [b[1] for b in both]
            calls = int(sum(gather_object([calls])))
        tally["judge_calls"] += calls
        tally["dialogs"] += len(played)
        tally["interactions"] += sum(r.user_turns for r in played)
        tally["tokens"] += sum(sum(r.env_mask) for r in played)
        tally["sequence_tokens"] += sum(len(r.prompt_ids) + len(r.completion_ids) for r in played)
        if trainer.accelerator.is_main_process:
            journal.add(step + 1, played, scored)
        return {"prompt_ids": [r.prompt_ids for r in rollouts], "completion_ids": [r.completion_ids for r in rollouts],
                "logprobs": None, "env_mask": [r.env_mask for r in rollouts],
                TURN_REWARDS: rewards, STATE_KEYS: [r.state_keys for r in rollouts],
                TURN_SPANS: [r.turn_spans for r in rollouts], REWARD_KEY: [float(sum(x)) for x in rewards]}

    def dialog_reward(prompts: Any, completions: Any, **kw: Any) -> list[float]:
        return [float(x) for x in kw[REWARD_KEY]]

    args = grpo_args(settings, out, device)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": text}], "seed_id": sid}
                                 for sid, text in openings])
    trainer_cls = turn_credit_trainer_class()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = trainer_cls(model=model, reward_funcs=[dialog_reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora_config(settings.adapter),
                          rollout_func=rollout_func, credit=settings.credit, gamma=settings.reward.gamma,
                          scale=settings.scale, state_weight=settings.state_weight,
                          state_scope=settings.state_scope)
    progress = progress_callback(settings, quiet=quiet, tally=tally)
    trainer.remove_callback(_printer())
    trainer.add_callback(progress)
    resume = resume_checkpoint(TrainSection(resume=settings.train.resume), out)  # skips one cut short by a kill
    if resume is not None:
        journal.keep_until(_checkpoint_step(resume))
    else:  # a fresh start: the folder's old rollouts belong to a run that is being replaced
        journal.keep_until(0)
    manifest = new_manifest("rl", settings.model_dump(mode="json"), seed=settings.train.seed,
                            inputs={str(inputs.seeds): sha256_path(inputs.seeds)})
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out))
    result = Result(outputs={"model": out, "rollouts": out / ROLLOUTS, "trees": journal.trees},
                    counts={"steps": trainer.state.global_step, "dialogs": tally["dialogs"],
                            "interactions": tally["interactions"], "judge_calls": tally["judge_calls"],
                            "trained_tokens": tally["tokens"]},
                    quality={"first_reward": progress.first_reward, "final_reward": progress.last_reward,
                             "final_kl": progress.last_kl},
                    seconds=time.perf_counter() - t0)
    if trainer.is_world_process_zero():
        save_template(out, tokenizer, template)
        from sage_dialog.core.io import write_json

        write_json(out / "rl_config.json", {"settings": settings.model_dump(mode="json"),
                                            "model": inputs.model.model_dump(mode="json"),
                                            "seeds": str(inputs.seeds)})
        write_json(out / "rl_summary.json", {**result.summary(), "log_history": trainer.state.log_history})
        finish_manifest(manifest, out, outputs=[str(out)], summary=result.summary())
    asyncio.run(pool.aclose())
    return result


def _printer() -> Any:
    from transformers.trainer_callback import PrinterCallback

    return PrinterCallback


def _checkpoint_step(path: str) -> int:
    try:
        return int(Path(path).name.rsplit("-", 1)[-1])
    except ValueError:
        return 0


class Journal:
    """Every dialog played: ``rollouts.jsonl`` (dialog records, appended step by step) and ``trees/``
    (one search-tree file per step: the dialogs of a group share their opening as the root, so their
    first replies are siblings scored by their return, the best one kept; ``prefs`` and ``trees`` read them)."""

    def __init__(self, path: Path, group_size: int):
        self.path = path
        self.trees = path.parent / "trees"
        self.group_size = group_size

    def add(self, step: int, rollouts: Sequence[Rollout], rewards: Sequence[Sequence[float]]) -> None:
        from sage_dialog.core.io import dumps, write_jsonl
        from sage_dialog.core.schema import Dialog

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for i, (r, rw) in enumerate(zip(rollouts, rewards, strict=True)):
                d = Dialog(id=f"rl-s{step}-{i}", turns=r.turns,
                           meta={"step": step, "seed_id": r.seed_id, "reward": float(sum(rw)), "turn_rewards": list(rw),
                                 "state_keys": r.state_keys, "source": "rl"})
                fh.write(dumps(d.model_dump(mode="json", exclude_none=True)) + "\n")
        write_jsonl(self.trees / f"step-{step:05d}.jsonl", self._nodes(step, rollouts, rewards))

    def _nodes(self, step: int, rollouts: Sequence[Rollout], rewards: Sequence[Sequence[float]]) -> list[Any]:
        from sage_dialog.core.schema import SearchNode
        from sage_dialog.stages.rl.credit import returns

        nodes: list[Any] = []
        for g0 in range(0, len(rollouts), self.group_size):
            group = list(range(g0, min(g0 + self.group_size, len(rollouts))))
            tree = f"rl-s{step}-g{g0 // self.group_size}"
            best = max(group, key=lambda i: sum(rewards[i]))
            root = f"{tree}-root"
            nodes.append(SearchNode(id=root, tree=tree, depth=0, role="user", text=rollouts[g0].opening, model="seed"))
            for i in group:
                rtg = returns(list(rewards[i]), 1.0)
                parent, k = root, 0
                for depth, t in enumerate(rollouts[i].turns[1:], start=1):
                    nid = f"{tree}-d{i - g0}-{depth}"
                    score = rtg[k] if t.role == "assistant" else None
                    nodes.append(SearchNode(id=nid, tree=tree, parent=parent, depth=depth, role=t.role, text=t.text,
                                            state=t.state, action=t.action, kept=(i == best) or depth > 1,
                                            score=score, model="policy" if t.role == "assistant" else "user"))
                    k += t.role == "assistant"
                    parent = nid
        return nodes

    def keep_until(self, step: int) -> None:
        """On resume: drop the dialogs of steps after the checkpoint (they are played again)."""
        import json

        if self.trees.is_dir():
            for f in self.trees.glob("step-*.jsonl"):
                if int(f.stem.split("-")[1]) > step:
                    f.unlink()
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("meta", {}).get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.path)


def progress_callback(settings: Settings, *, quiet: bool, tally: dict[str, Any]) -> Any:
    """A trainer callback: one progress line per step (reward mean/std, KL, entropy, interactions,
    tokens/s; every log dict goes to the stage log) and the stage's gates (stall, KL)."""
    from transformers import TrainerCallback

    class RLProgress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.stalled = 0
            self.first_reward: float | None = None
            self.last_reward: float | None = None
            self.last_kl: float | None = None
            self.bar: Any = None
            self.t0 = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero and not quiet:
                from tqdm import tqdm

                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="rl", unit="step",
                                dynamic_ncols=True)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "reward" not in logs:
                return
            reward, std = float(logs["reward"]), float(logs.get("reward_std", 0.0))
            kl, ent = logs.get("kl"), logs.get("entropy")
            if self.first_reward is None:
                self.first_reward = reward
            self.last_reward = reward
            self.last_kl = None if kl is None else float(kl)
            line = (f"reward {reward:+.3f} ± {std:.3f}" + (f", kl {kl:.4f}" if kl is not None else "")
                    + (f", entropy {ent:.3f}" if ent is not None else "")
                    + f", interactions {tally['interactions']}, "
                    f"{tally['sequence_tokens'] / max(time.perf_counter() - self.t0, 1e-9):.0f} tok/s")
            log.info("rl step %d: %s | %s", state.global_step, line, logs)
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
                self.bar.set_postfix_str(line, refresh=True)
            g = settings.gates
            if g.stall_steps is not None:
                self.stalled = self.stalled + 1 if float(logs.get("frac_reward_zero_std", 0.0)) >= 1.0 else 0
                if self.stalled >= g.stall_steps:
                    raise UserError(f"rl: every group's rewards were identical for {self.stalled} steps in a row "
                                    f"(step {state.global_step}): nothing to learn from; raise rollout.temperature "
                                    "or train.group_size, or set gates.stall_steps: null")
            if g.max_kl is not None and kl is not None and float(kl) > g.max_kl:
                raise UserError(f"rl: KL to the starting policy {float(kl):.3f} > gates.max_kl {g.max_kl} at step "
                                f"{state.global_step}: lower train.learning_rate or raise train.beta")

    return RLProgress()
