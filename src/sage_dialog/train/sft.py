"""Supervised fine-tuning on SAC dialogs with TRL's SFTTrainer (LoRA, QLoRA or full).

Example::

    from sage_dialog.core.config import load_config
    from sage_dialog.train.config import SFTRunConfig
    from sage_dialog.train.sft import train_sft

    cfg = load_config(SFTRunConfig, "configs/train-sft-small.yaml", ["train.max_steps=50"])
    out = train_sft(cfg)   # adapter (or full model) + tokenizer + chat_template.jinja + training_summary.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sage_dialog.core.io import check_paths, finish_manifest, new_manifest, sha256_path
from sage_dialog.train.common import (
    align_eos,
    calm_progress,
    check_target_modules,
    common_args,
    count_params,
    load_model,
    load_tokenizer,
    lora_config,
    resolve_device,
    resume_checkpoint,
    save_template,
    write_run_config,
)
from sage_dialog.train.config import SFTRunConfig
from sage_dialog.train.data import build_sft_dataset, load_sft_messages, split_eval
from sage_dialog.train.moe import set_zero3_leaf_modules
from sage_dialog.train.summary import Timer, TrainingSummary, losses, write_summary

log = logging.getLogger(__name__)


def build_datasets(cfg: SFTRunConfig, tokenizer: Any, template: str) -> tuple[Any, Any | None]:
    """Tokenized train and (optional) eval datasets with assistant-only loss labels."""
    d = cfg.data
    train_convs = load_sft_messages(d.train, d.limit)
    if d.eval is not None:
        eval_convs = load_sft_messages(d.eval, d.limit)
    else:
        train_convs, eval_convs = split_eval(train_convs, d.eval_fraction, cfg.train.seed)
    seed = cfg.train.seed
    train_ds = build_sft_dataset(tokenizer, train_convs, template, loss_on=d.loss_on, tag_dropout=d.tag_dropout,
                                 seed=seed)
    # eval keeps every turn's tags: it measures the target the user asked for, not the dropout noise
    eval_ds = (build_sft_dataset(tokenizer, eval_convs, template, loss_on=d.loss_on, seed=seed)
               if eval_convs else None)
    return train_ds, eval_ds


def train_sft(cfg: SFTRunConfig) -> Path:
    """Fine-tune ``cfg.model`` on ``cfg.data``; return the output folder (model or adapter, tokenizer, summary)."""
    out = Path(cfg.output_dir)
    # data and output are checked before trl and the model (tens of seconds) load
    check_paths(inputs=[cfg.data.train, cfg.data.eval], folders=[out])
    from trl import SFTConfig, SFTTrainer

    if cfg.threads is not None:
        from sage_dialog.core import threads

        threads.apply(cfg.threads)
    device = resolve_device(cfg.train)
    tokenizer, template = load_tokenizer(cfg.model)
    train_ds, eval_ds = build_datasets(cfg, tokenizer, template)
    manifest = new_manifest("train-sft", cfg.model_dump(mode="json"), seed=cfg.train.seed,
                            inputs={str(cfg.data.train): sha256_path(cfg.data.train)})
    args = SFTConfig(
        **common_args(cfg, device, has_eval=eval_ds is not None),
        max_length=cfg.data.max_length,
        packing=cfg.data.packing,
        # labels are built in data.py (assistant turns, tags or reply); TRL must not rebuild them
        assistant_only_loss=False,
        completion_only_loss=False,
        dataset_num_proc=None,
    )
    # created after the TrainingArguments so that a ZeRO-3 config is active while the model loads
    model = load_model(cfg.model, cfg.adapter, device, cfg.train.precision)
    check_target_modules(model, cfg.adapter)
    align_eos(tokenizer, model, template)
    set_zero3_leaf_modules(model)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.adapter),
    )
    calm_progress(trainer, "train sft")
    resume = resume_checkpoint(cfg.train, out)
    with Timer() as timer:
        trainer.train(resume_from_checkpoint=resume)
    eval_loss = None
    if eval_ds is not None:
        eval_loss = trainer.evaluate().get("eval_loss")
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():  # other ranks of a multi-GPU run write nothing else
        return out
    save_template(out, tokenizer, template)
    write_run_config(out, cfg)
    summary = make_summary(trainer, cfg, "sft", timer.elapsed, len(train_ds), len(eval_ds or []), resume, device)
    if eval_loss is not None:
        summary.final_eval_loss = float(eval_loss)
    write_summary(out, summary)
    finish_manifest(manifest, out, outputs=[str(out)], summary=summary.model_dump(exclude={"log_history"}))
    log.info("SFT done: %s (%d steps, final loss %s)", out, summary.steps, summary.final_train_loss)
    return out


def make_summary(trainer: Any, cfg: Any, stage: str, wall: float, n_train: int, n_eval: int,
                 resume: str | None, device: str) -> TrainingSummary:
    """Summary from a finished trainer (tokens seen in this session, losses from the log history)."""
    state = trainer.state
    history = list(state.log_history)
    first, last, ev = losses(history)
    tokens = int(state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0))
    trainable, total = count_params(trainer.model)
    return TrainingSummary(
        stage=stage,
        base_model=cfg.model.name_or_path,
        method=cfg.adapter.method,
        steps=int(state.global_step),
        epochs=float(state.epoch or 0.0),
        tokens=tokens,
        wall_time_s=round(wall, 3),
        tokens_per_s=round(tokens / wall, 2) if wall > 0 else 0.0,
        first_train_loss=first,
        final_train_loss=last,
        final_eval_loss=ev,
        train_examples=n_train,
        eval_examples=n_eval,
        trainable_params=trainable,
        total_params=total,
        resumed_from=resume,
        device=device,
        log_history=history,
    )
