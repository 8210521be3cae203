"""What SFT and DPO share: device and precision, tokenizer and template, model loading, LoRA, resume."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from sage_dialog.backends.chat_templates import TEMPLATES, end_of_turn, missing_tokens, template_for
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import write_json
from sage_dialog.train.config import AdapterSection, ModelSection, TrainSection, _RunConfig
from sage_dialog.train.templates import has_generation_markers, resolve_template

log = logging.getLogger(__name__)


def resolve_device(train: TrainSection) -> str:
    """``cuda`` when asked for or available, else ``cpu``; asking for cuda without one is an error."""
    import torch

    if train.device == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA GPU is visible")
    if train.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return train.device


def bf16_frozen_base(precision: str, method: str, device: str) -> bool:
    """Whether a CPU run keeps its frozen base weights in bfloat16: ``precision: fast`` with LoRA on a
    CPU that computes bf16 natively. Only the adapters learn, so only they need float32 (PEFT keeps
    them, their gradients and the optimizer in float32); the base's matmuls run in bf16 without
    autocast's bf16 copies of float32 weights. On the development EPYC the quickstart's SFT was
    1.12x faster than fp32 with LoRA dropout and no faster than fp32 without it, and RSS grew with
    each new sequence length (oneDNN's kernel cache); autocast had given 1.15x and +1.6 GB
    (benchmarks/RESULTS-real-model.md)."""
    if device != "cpu" or precision != "fast" or method != "lora":
        return False
    from sage_dialog.core.cpu import native_bf16

    return native_bf16()


def precision_args(train: TrainSection, device: str, method: str = "full") -> dict[str, Any]:
    """TrainingArguments for precision, gradient checkpointing and CPU use (``method``: the adapter's).

    TRL defaults to bf16 and gradient checkpointing, which fail or crawl on CPU: on CPU both go off
    and ``use_cpu`` is set. On GPU, ``auto`` means bf16 where supported.
    """
    import torch

    prec = train.precision
    if device == "cpu":
        if prec in ("bf16", "fp16"):
            raise UserError(f"train.precision={prec} needs a GPU; use fp32, auto or fast on CPU")
        from sage_dialog.core.cpu import native_bf16

        # fast: bf16 autocast over fp32 weights where the CPU has bf16 instructions (mixed precision,
        # the weights and optimizer stay fp32); with LoRA the frozen base is bf16 itself instead
        # (bf16_frozen_base); everywhere else fp32, which is faster than emulated bf16
        cpu_bf16 = prec == "fast" and native_bf16() and not bf16_frozen_base(prec, method, device)
        return {"use_cpu": True, "bf16": cpu_bf16, "fp16": False,
                "gradient_checkpointing": bool(train.gradient_checkpointing)}
    if prec in ("auto", "fast"):
        prec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    gc = True if train.gradient_checkpointing is None else train.gradient_checkpointing
    return {"use_cpu": False, "bf16": prec == "bf16", "fp16": prec == "fp16", "gradient_checkpointing": gc}


def model_path(model_cfg: ModelSection) -> str:
    """The folder or hub id to load: a ``.gguf`` file or a short name (``smollm2-135m``) becomes its
    dequantized, cached model folder (:mod:`sage_dialog.backends.gguf`)."""
    from sage_dialog.backends.gguf import resolve_model

    dtype = "float32" if model_cfg.dtype == "auto" else model_cfg.dtype
    return resolve_model(model_cfg.name_or_path, dtype)


def load_tokenizer(model_cfg: ModelSection) -> tuple[Any, str]:
    """The tokenizer with the chat template used for training (returned as well) and a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path(model_cfg), trust_remote_code=model_cfg.trust_remote_code)
    except OSError as e:
        raise UserError(f"model.name_or_path: cannot load a tokenizer from {model_cfg.name_or_path!r}: {e}") from None
    if model_cfg.chat_template is not None:
        template = resolve_template(model_cfg.chat_template)
    elif tok.chat_template:
        template = tok.chat_template
        if isinstance(template, dict):  # several named templates: use the default one
            template = template.get("default") or next(iter(template.values()))
    else:
        template = _architecture_template(model_cfg, tok)
    missing = missing_tokens(template, tok)
    if missing:  # the model could only spell these in pieces, and would never stop a turn
        raise UserError(
            f"model.chat_template: the chat template writes {', '.join(missing)}, which the tokenizer of "
            f"{model_cfg.name_or_path!r} does not have; training on it would teach tokens the model lacks. "
            f"Give a template it fits: model.chat_template=NAME|FILE.jinja (--chat-template; names: "
            f"{', '.join(TEMPLATES)})")
    if not has_generation_markers(template):
        log.info("chat template has no {%% generation %%} markers; assistant turns found by prefix rendering")
    tok.chat_template = template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, template


def _architecture_template(model_cfg: ModelSection, tok: Any) -> str:
    """The turn format of the model's architecture (a model without a chat template), or a UserError."""
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(model_path(model_cfg),
                                                trust_remote_code=model_cfg.trust_remote_code).model_type
    except (OSError, ValueError):
        model_type = None
    found = template_for(model_type, tok)
    if found is None:
        raise UserError(
            f"model.name_or_path: {model_cfg.name_or_path!r} has no chat template, and its architecture "
            f"({model_type or 'unknown'}) has no known turn format its tokenizer fits; give one: "
            f"model.chat_template=NAME|FILE.jinja (--chat-template; names: {', '.join(TEMPLATES)})")
    log.warning("%s has no chat template; using the %s turn format of its architecture (%s)",
                model_cfg.name_or_path, found[0], model_type)
    return found[1]


def _dtype(model_cfg: ModelSection, device: str, bf16_base: bool = False) -> Any:
    import torch

    if model_cfg.dtype == "auto" and bf16_base:
        return torch.bfloat16
    if model_cfg.dtype == "auto":
        # float32 on CPU (bf16 matmuls are slow there); the checkpoint's dtype on GPU
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, model_cfg.dtype)


def load_model(model_cfg: ModelSection, adapter: AdapterSection, device: str, precision: str = "auto") -> Any:
    """Load the causal LM (4-bit quantised for QLoRA; bf16 for LoRA under ``precision: fast`` on a
    CPU with bf16 instructions, :func:`bf16_frozen_base`) ready for a trainer."""
    from transformers import AutoModelForCausalLM

    bf16_base = bf16_frozen_base(precision, adapter.method, device)
    kwargs: dict[str, Any] = {"dtype": _dtype(model_cfg, device, bf16_base), "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    else:
        from sage_dialog.backends.attention import register

        # packed rows attended per document, on any device (stock sdpa masks the whole row), and on
        # CPU GQA without copying the KV heads; otherwise it is transformers' sdpa (see that module)
        kwargs["attn_implementation"] = register()
    if adapter.method == "qlora":
        if device != "cuda":
            raise UserError("adapter.method=qlora needs a CUDA GPU; use lora or full on CPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("adapter.method=qlora needs bitsandbytes: pip install -c constraints.txt bitsandbytes")
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
        )
        if "LOCAL_RANK" in os.environ:
            kwargs["device_map"] = {"": int(os.environ["LOCAL_RANK"])}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path(model_cfg), **kwargs)
    except OSError as e:
        raise UserError(f"model.name_or_path: cannot load {model_cfg.name_or_path!r}: {e}") from None
    if adapter.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def lora_config(adapter: AdapterSection) -> Any:
    """PEFT LoraConfig for lora / qlora, None for full fine-tuning."""
    if adapter.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=adapter.target_modules,
        modules_to_save=adapter.modules_to_save,
        task_type="CAUSAL_LM",
        bias="none",
    )


def check_target_modules(model: Any, adapter: AdapterSection) -> None:
    """A clear error when LoRA target modules match nothing in the model."""
    if adapter.method == "full" or isinstance(adapter.target_modules, str):
        return  # "all-linear" or a regex: PEFT validates it
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in adapter.target_modules if t not in leaf_names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise UserError(f"adapter.target_modules: {missing} not in the model; its linear layers are {linear}")


def resume_checkpoint(train: TrainSection, output_dir: Path) -> str | None:
    """The checkpoint to resume from: a given path, or the last one in output_dir when resume is true.

    Called right before training starts, when every input has been read: the output folder is
    claimed as ours now (its checkpoints are resumable work, even after a SIGKILL).
    """
    from sage_dialog.core.outputs import claim

    output_dir.mkdir(parents=True, exist_ok=True)
    claim(output_dir)
    if train.resume is False:
        return None
    if isinstance(train.resume, str) and train.resume not in ("true", "last"):
        p = Path(train.resume)
        if not (p / "trainer_state.json").exists():
            raise UserError(f"train.resume: {p} is not a checkpoint folder (no trainer_state.json)")
        return str(p)
    from sage_dialog.train.launch import last_complete_checkpoint

    last = last_complete_checkpoint(output_dir)  # a checkpoint cut short by a kill is skipped
    if last is None:
        log.warning("train.resume: no checkpoint in %s, starting from scratch", output_dir)
    return last


def common_args(cfg: _RunConfig, device: str, *, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments fields shared by SFTConfig and DPOConfig."""
    t = cfg.train
    from sage_dialog.train.launch import check_launch

    check_launch(device, t.deepspeed)
    report = [r for r in t.report_to if importlib.util.find_spec(r)]  # wandb / tensorboard packages
    for r in t.report_to:
        if r not in report:
            log.warning("train.report_to: %s is not installed, not logging to it", r)
    args: dict[str, Any] = {
        "output_dir": str(cfg.output_dir),
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_ratio,  # a float < 1 is a ratio in transformers 5
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps" if t.save_steps else "epoch",
        "save_total_limit": t.save_total_limit,
        "eval_strategy": ("steps" if (t.eval_steps or t.save_steps) else "epoch") if has_eval else "no",
        "report_to": report or "none",
        "include_num_input_tokens_seen": "non_padding",
        "deepspeed": str(t.deepspeed) if t.deepspeed else None,
        "disable_tqdm": True,  # calm_progress shows one line instead of the trainer's bars
        **precision_args(t, device, cfg.adapter.method),
    }
    if t.save_steps:
        args["save_steps"] = t.save_steps
    if has_eval and (t.eval_steps or t.save_steps):
        args["eval_steps"] = t.eval_steps or t.save_steps
    if args["gradient_checkpointing"]:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return args


def align_eos(tokenizer: Any, model: Any, template: str) -> None:
    """Make generation stop at the template's end-of-turn token (``<|im_end|>`` for chatml,
    ``<end_of_turn>`` for gemma, ...).

    A base model given the chatml template may have ``</s>`` as its eos: the trained model would
    then end turns with ``<|im_end|>`` but generation would run on. When the token is in the
    vocabulary it becomes the tokenizer's eos and is added to the model's generation eos ids.
    """
    marker = end_of_turn(template)
    if marker is None or tokenizer.eos_token == marker:
        return
    vocab = tokenizer.get_vocab()
    if marker not in vocab:
        log.warning("the chat template ends turns with %s, which is not in the vocabulary; generation may not "
                    "stop at the end of a turn (prefer the model's own template)", marker)
        return
    tokenizer.eos_token = marker
    eos = model.generation_config.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if vocab[marker] not in ids:
        model.generation_config.eos_token_id = [vocab[marker], *ids]


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    def n(p: Any) -> int:
        return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions leave numel() at 0

    trainable = sum(n(p) for p in model.parameters() if p.requires_grad)
    total = sum(n(p) for p in model.parameters())
    return trainable, total


def save_template(out_dir: Path, tokenizer: Any, template: str) -> None:
    """Save the tokenizer with the training chat template (``chat_template.jinja``) for inference."""
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "chat_template.jinja").write_text(template, encoding="utf-8")


def write_run_config(out_dir: Path, cfg: _RunConfig) -> None:
    write_json(out_dir / "train_config.json", cfg.model_dump(mode="json"))


def calm_progress(trainer: Any, stage: str) -> None:
    """One progress line (steps, loss, ETA) instead of the trainer's bars and printed dicts.

    The trainer's own ``ProgressCallback`` / ``PrinterCallback`` (which print raw log dicts) are
    removed; every log dict goes to the ``sage_dialog.train`` logger, i.e. the run's log file.
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class StageProgress(TrainerCallback):  # type: ignore[misc]
        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            from tqdm import tqdm

            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=stage, unit="step",
                                dynamic_ncols=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            log.info("%s step %d: %s", stage, state.global_step, logs)
            if self.bar is not None and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress())
