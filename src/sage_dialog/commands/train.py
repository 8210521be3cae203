"""Fine-tune with SFT, DPO or online RL (TRL + PEFT): LoRA, QLoRA or full, on one CPU, one GPU or many.

Example:
  sage-dialog train sft configs/train-sft-small.yaml --data data/sft.jsonl -o runs/sft
  sage-dialog train sft configs/train-sft-small.yaml lora.r=8 train.learning_rate=1e-4
  sage-dialog train dpo configs/train-dpo-small.yaml --model runs/sft-merged --data data/prefs.jsonl -o runs/dpo
  sage-dialog train sft configs/train-sft-small.yaml --resume          # continue from the last checkpoint
  sage-dialog train rl configs/rl-sandbox.yaml --model demo-out/sft/model -o runs/rl credit=state
  accelerate launch --config_file src/sage_dialog/train/accelerate/deepspeed_zero3_offload.yaml \\
      -m sage_dialog train sft configs/train-sft-mixtral-8x7b.yaml

Overrides are dotted keys of the config (model.*, adapter.*, data.*, train.*, dpo.*, output_dir; for
rl: credit, loss_on, rollout.*, reward.*, train.*, gates.*, seeds). SFT data: TRL messages JSONL or
dialog JSONL. DPO data: TRL prompt/chosen/rejected JSONL or preference-pair JSONL. RL plays whole
dialogs from seed openings (--seeds: one opening per line) against a user simulator, online
(TRL GRPOTrainer; credit token | turn | state, see docs/rl.md). The output folder gets the model or adapter, the tokenizer with the chat
template used, training_summary.json and manifest.json. See docs/training.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# the alias map: flag -> field of the SFT/DPO run config (rl spells max_steps as train.steps: RL_RENAME)
FLAGS = {
    "model.name_or_path": ["--model"],
    "model.chat_template": ["--chat-template"],
    "data.train": ["--data"],
    "data.eval": ["--eval-data"],
    "output_dir": ["-o", "--out"],
    "adapter.method": ["--method"],
    "train.max_steps": ["--max-steps"],
    "train.resume": ["--resume"],
    "train.seed": ["--seed"],
}
RL_RENAME = {"train.max_steps": "train.steps"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags, register_flag
    from sage_dialog.train.config import SFTRunConfig

    parser.add_argument("stage", choices=["sft", "dpo", "rl"],
                        help="sft: supervised fine-tuning; dpo: preferences; rl: online multi-turn RL (GRPO)")
    parser.add_argument("config_arg", nargs="?", metavar="CONFIG",
                        help="YAML config (see configs/train-*.yaml); the same as --config CONFIG")
    add_config_flags(parser, SFTRunConfig, only=[*FLAGS, "threads"], flags=FLAGS, key_values=True,
                     what="the stage's run config", extra={
                         "model.name_or_path": {"metavar": "MODEL", "help": "base model: hub id or local folder"},
                         "model.chat_template": {"metavar": "NAME|FILE"},
                         "data.train": {"metavar": "FILE", "help": "training JSONL"},
                         "data.eval": {"metavar": "FILE", "help": "evaluation JSONL"},
                         "output_dir": {"metavar": "DIR", "help": "output folder"},
                         "train.max_steps": {"help": "overrides epochs (rl: train.steps)"},
                         "train.resume": {"nargs": "?", "const": True, "type": str, "metavar": "CHECKPOINT",
                                          "help": "resume from the last checkpoint in the output folder, or from "
                                                  "CHECKPOINT"},
                         "train.seed": {"help": "random seed"},
                     })
    # rl's own field, spelled by hand: its config model imports the RL trainer (slow for --help)
    seeds = parser.add_argument("--seeds", default=argparse.SUPPRESS, type=Path, metavar="FILE",
                                help="rl: seed openings, one per line")
    register_flag(parser, seeds)


def _config(model: type, args: argparse.Namespace, rename: dict[str, str] | None = None) -> Any:
    from sage_dialog.commands.config_flags import config_from_args

    return config_from_args(model, args, rename=rename)


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_path, overrides_of
    from sage_dialog.core import console
    from sage_dialog.core.errors import UserError

    args.config_file = config_path(args)
    given = vars(args)
    rl = args.stage == "rl"
    if rl and ("data.train" in given or "data.eval" in given):
        raise UserError("train rl: give seed openings with --seeds (rl plays dialogs, it reads no training data)")
    if not rl and "seeds" in given:
        raise UserError(f"--seeds: train {args.stage} reads --data (only train rl plays from seed openings)")
    if args.config_file is None and "model.name_or_path" not in given \
            and not any(o.startswith("model.") for o in overrides_of(args)):
        raise UserError("give a config file or at least --model, --data and -o")
    from sage_dialog.train.launch import is_main, rank

    # under accelerate launch each rank logs to its own file; rank 0 keeps the plain name
    suffix = "" if is_main() else f".rank{rank()}"
    if args.stage == "sft":
        from sage_dialog.train.config import SFTRunConfig
        from sage_dialog.train.sft import train_sft

        sft_cfg = _config(SFTRunConfig, args)
        log = console.stage_log(sft_cfg.output_dir, "train-sft" + suffix, carry_over=True)
        out = train_sft(sft_cfg)
    elif args.stage == "rl":
        from sage_dialog.stages import rl

        rl_cfg = _config(rl.RunConfig, args, RL_RENAME)
        log = console.stage_log(rl_cfg.output_dir, "train-rl" + suffix, carry_over=True)
        res = rl.run(rl_cfg.settings(), inputs=rl.Inputs(model=rl_cfg.model, seeds=rl_cfg.seeds, cache=rl_cfg.cache),
                     out=rl_cfg.output_dir, quiet=False)
        c, q = res.counts, res.quality
        num = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
        print(f"rl: {c['steps']} steps, {c['dialogs']} dialogs, {c['interactions']} user turns; reward "
              f"{num(q.get('first_reward'))} -> {num(q.get('final_reward'))} (credit {rl_cfg.credit})")
        out = rl_cfg.output_dir
    else:
        from sage_dialog.train.config import DPORunConfig
        from sage_dialog.train.dpo import train_dpo

        dpo_cfg = _config(DPORunConfig, args)
        log = console.stage_log(dpo_cfg.output_dir, "train-dpo" + suffix, carry_over=True)
        out = train_dpo(dpo_cfg)
    if is_main():
        print(f"wrote {out} (training_summary.json inside; log: {log})")
    return 0
