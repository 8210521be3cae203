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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=["sft", "dpo", "rl"],
                        help="sft: supervised fine-tuning; dpo: preferences; rl: online multi-turn RL (GRPO)")
    parser.add_argument("config", nargs="?", help="YAML config (see configs/train-*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. adapter.r=8 train.epochs=1")
    parser.add_argument("--model", help="base model: hub id or local folder (model.name_or_path)")
    parser.add_argument("--data", help="training JSONL (data.train)")
    parser.add_argument("--seeds", help="rl: seed openings, one per line (seeds)")
    parser.add_argument("--eval-data", help="evaluation JSONL (data.eval)")
    parser.add_argument("-o", "--output", help="output folder (output_dir)")
    parser.add_argument("--method", choices=["lora", "qlora", "full"], help="adapter.method")
    parser.add_argument("--max-steps", type=int, help="train.max_steps (overrides epochs; rl: train.steps)")
    parser.add_argument("--resume", nargs="?", const="true", metavar="CHECKPOINT",
                        help="resume from the last checkpoint in the output folder, or from CHECKPOINT")
    parser.add_argument("--seed", type=int, help="train.seed")
    # allow `train sft CFG --model M key=value`: overrides may follow the flags
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]


def _overrides(args: argparse.Namespace) -> list[str]:
    """Flags as dotted overrides; flags win over the config file, explicit overrides over flags."""
    rl = args.stage == "rl"
    if rl and (args.data or args.eval_data):
        from sage_dialog.core.errors import UserError

        raise UserError("train rl: give seed openings with --seeds (rl plays dialogs, it reads no training data)")
    flags = {
        "model.name_or_path": args.model,
        "data.train": args.data,
        "data.eval": args.eval_data,
        "output_dir": args.output,
        "adapter.method": args.method,
        "seeds": getattr(args, "seeds", None),
        "train.steps" if rl else "train.max_steps": args.max_steps,
        "train.resume": args.resume,
        "train.seed": args.seed,
        "threads": getattr(args, "threads", None),
    }
    out = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return out + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core import console
    from sage_dialog.core.config import load_config
    from sage_dialog.core.errors import UserError

    config = args.config
    overrides = _overrides(args)
    if config is not None and "=" in config:  # no file given, only overrides
        overrides.insert(len(overrides) - len(args.overrides), config)
        config = None
    if config is None and not any(o.startswith("model.") for o in overrides):
        raise UserError("give a config file or at least --model, --data and -o")
    from sage_dialog.train.launch import is_main, rank

    # under accelerate launch each rank logs to its own file; rank 0 keeps the plain name
    suffix = "" if is_main() else f".rank{rank()}"
    if args.stage == "sft":
        from sage_dialog.train.config import SFTRunConfig
        from sage_dialog.train.sft import train_sft

        sft_cfg = load_config(SFTRunConfig, config, overrides)
        log = console.stage_log(sft_cfg.output_dir, "train-sft" + suffix, carry_over=True)
        out = train_sft(sft_cfg)
    elif args.stage == "rl":
        from sage_dialog.stages import rl

        rl_cfg = load_config(rl.RunConfig, config, overrides)
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

        dpo_cfg = load_config(DPORunConfig, config, overrides)
        log = console.stage_log(dpo_cfg.output_dir, "train-dpo" + suffix, carry_over=True)
        out = train_dpo(dpo_cfg)
    if is_main():
        print(f"wrote {out} (training_summary.json inside; log: {log})")
    return 0
