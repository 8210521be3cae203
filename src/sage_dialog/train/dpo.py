"""Preference optimisation (DPO) with an SFT term mixed in, on TRL's DPOTrainer.

The original SAGE runs used LLaMA-Factory's ``dpo_ftx: 1.0``: the DPO loss plus 1.0 × the
negative log-likelihood of the chosen reply. TRL 1.16 expresses this as ``loss_type=["sigmoid",
"sft"]`` with ``loss_weights=[1.0, 1.0]``; ``dpo.sft_weight`` sets the second weight. Under LoRA the
reference model is the base with the adapter disabled (TRL does this when given a ``peft_config``);
under full fine-tuning it is a frozen copy of the starting model.

``data.loss_on`` restricts both terms to a part of each completion: ``tags`` trains the action
choice alone (the tag blocks; state-level policy improvement on action-level pairs), ``reply`` the
realisation under given tags; ``turn`` (default) everything. The mask is applied by
:class:`PartCollator` on TRL's completion mask, so the reference model sees the same tokens.

Example::

    cfg = load_config(DPORunConfig, "configs/train-dpo-small.yaml", ["model.name_or_path=runs/sft-merged"])
    out = train_dpo(cfg)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import check_paths, finish_manifest, new_manifest, sha256_path
from sage_dialog.train.common import (
    align_eos,
    calm_progress,
    check_target_modules,
    common_args,
    load_model,
    load_tokenizer,
    lora_config,
    resolve_device,
    resume_checkpoint,
    save_template,
    write_run_config,
)
from sage_dialog.train.config import DPORunConfig
from sage_dialog.train.data import load_preferences, split_eval
from sage_dialog.train.moe import set_zero3_leaf_modules
from sage_dialog.train.sft import make_summary
from sage_dialog.train.summary import Timer, write_summary

log = logging.getLogger(__name__)

KNOWN_LOSSES = {
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
}


def loss_spec(cfg: DPORunConfig) -> tuple[list[str], list[float]]:
    """TRL ``loss_type`` and ``loss_weights``: the preference losses (weight 1) plus the SFT term."""
    bad = [t for t in cfg.dpo.loss_type if t not in KNOWN_LOSSES]
    if bad:
        raise UserError(f"dpo.loss_type: unknown {bad}; known: {sorted(KNOWN_LOSSES)}")
    types = list(cfg.dpo.loss_type)
    weights = [1.0] * len(types)
    if cfg.dpo.sft_weight > 0:
        types.append("sft")
        weights.append(cfg.dpo.sft_weight)
    return types, weights


def part_collator(tokenizer: Any, args: Any, loss_on: str) -> Any:
    """TRL's preference collator with the completion mask cut to ``loss_on`` (tags or reply)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from sage_dialog.train.data import completion_loss_mask

    class PartCollator(DataCollatorForPreference):  # type: ignore[misc]
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            mask = out["completion_mask"]
            rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + \
                   [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
            for r, (p, c) in enumerate(rows):
                for j, keep in enumerate(completion_loss_mask(tokenizer, c, loss_on)):  # type: ignore[arg-type]
                    pos = len(p) + j
                    if pos < mask.shape[1] and not keep:
                        mask[r, pos] = 0
            return out

    return PartCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                        truncation_mode=args.truncation_mode, pad_to_multiple_of=args.pad_to_multiple_of)


def build_datasets(cfg: DPORunConfig) -> tuple[Any, Any | None]:
    from datasets import Dataset

    from sage_dialog.core import sac

    d = cfg.data
    train = load_preferences(d.train, d.limit)
    if d.loss_on == "tags" and not any(sac.parse(r["chosen"][0]["content"]).has_tags for r in train):
        raise UserError(f"{d.train}: data.loss_on is tags but no chosen reply has tag blocks: nothing to train")
    if d.eval is not None:
        ev = load_preferences(d.eval, d.limit)
    else:
        train, ev = split_eval(train, d.eval_fraction, cfg.train.seed)
    return Dataset.from_list(train), (Dataset.from_list(ev) if ev else None)


def train_dpo(cfg: DPORunConfig) -> Path:
    """Run DPO (+ SFT term) from ``cfg.model`` on ``cfg.data``; return the output folder."""
    out = Path(cfg.output_dir)
    # data and output are checked before trl and the model (tens of seconds) load
    check_paths(inputs=[cfg.data.train, cfg.data.eval], folders=[out])
    from trl import DPOConfig, DPOTrainer

    if cfg.threads is not None:
        from sage_dialog.core import threads

        threads.apply(cfg.threads)
    device = resolve_device(cfg.train)
    tokenizer, template = load_tokenizer(cfg.model)
    train_ds, eval_ds = build_datasets(cfg)
    manifest = new_manifest("train-dpo", cfg.model_dump(mode="json"), seed=cfg.train.seed,
                            inputs={str(cfg.data.train): sha256_path(cfg.data.train)})
    types, weights = loss_spec(cfg)
    args = DPOConfig(
        **common_args(cfg, device, has_eval=eval_ds is not None),
        max_length=cfg.data.max_length,
        beta=cfg.dpo.beta,
        loss_type=types,
        loss_weights=weights,
        label_smoothing=cfg.dpo.label_smoothing,
        dataset_num_proc=None,
    )
    model = load_model(cfg.model, cfg.adapter, device, cfg.train.precision)
    check_target_modules(model, cfg.adapter)
    align_eos(tokenizer, model, template)
    set_zero3_leaf_modules(model)
    if tokenizer.pad_token is None:  # TRL sets it when it builds its own collator
        tokenizer.pad_token = tokenizer.eos_token
    collator = part_collator(tokenizer, args, cfg.data.loss_on) if cfg.data.loss_on != "turn" else None
    trainer = DPOTrainer(
        model=model,
        data_collator=collator,
        ref_model=None,  # LoRA: base with adapter off; full: TRL makes a frozen copy
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.adapter),
    )
    calm_progress(trainer, "train dpo")
    resume = resume_checkpoint(cfg.train, out)
    with Timer() as timer:
        trainer.train(resume_from_checkpoint=resume)
    eval_loss = trainer.evaluate().get("eval_loss") if eval_ds is not None else None
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():  # other ranks of a multi-GPU run write nothing else
        return out
    save_template(out, tokenizer, template)
    write_run_config(out, cfg)
    summary = make_summary(trainer, cfg, "dpo", timer.elapsed, len(train_ds), len(eval_ds or []), resume, device)
    if eval_loss is not None:
        summary.final_eval_loss = float(eval_loss)
    write_summary(out, summary)
    finish_manifest(manifest, out, outputs=[str(out)], summary=summary.model_dump(exclude={"log_history"}))
    log.info("DPO done: %s (%d steps, final loss %s)", out, summary.steps, summary.final_train_loss)
    return out
