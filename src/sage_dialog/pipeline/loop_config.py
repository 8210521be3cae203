"""The config of ``sage-dialog run``: one YAML file for the whole SAGE loop (:class:`LoopConfig`).

Each stage's section *is* that stage's typed settings (``mix: stages.mix.Settings``, ``prefs:
stages.prefs.Settings``, ``rl: stages.rl.Settings``...), so a setting means the same thing in a run
config, on the stage's command line and in Python, and a typo stops the run when the config is read.
What the loop itself fills (the model each stage starts from, its data, its folder) is left out of the
sections or set by the loop (see :mod:`sage_dialog.pipeline.sage_loop`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sage_dialog.backends.base import BackendConfig
from sage_dialog.pipeline.runner import GatesConfig
from sage_dialog.pipeline.world import WorldSection
from sage_dialog.stages.annotate import Settings as AnnotateSettings
from sage_dialog.stages.benchmarks import Settings as BenchmarksSettings
from sage_dialog.stages.compare.compare import CompareConfig
from sage_dialog.stages.engine import EngineSettings, engine_field
from sage_dialog.stages.mix import Settings as MixSettings
from sage_dialog.stages.prefs import Settings as PrefsSettings
from sage_dialog.stages.rl.settings import Settings as RLSettings
from sage_dialog.stages.search.stage import SearchRunConfig
from sage_dialog.stages.steerability import Settings as SteerabilitySettings
from sage_dialog.train.config import DataSection, DPORunConfig, ModelSection, SFTRunConfig


class AnnotateSection(AnnotateSettings):
    """The ``annotate:`` section: the stage's settings plus the files an LLM annotator reads."""

    few_shot: Path | None = Field(None, description="annotated Dialog JSONL used as few-shot examples")
    prompt: Path | None = Field(None, description="a custom annotator prompt template (string.Template)")


class TrainModelSection(ModelSection):
    """``model:`` of a training section: the loop names the model (the base, or the stage before)."""

    name_or_path: str | None = Field(None, description="set by the loop")  # type: ignore[assignment]


class TrainDataSection(DataSection):
    """``data:`` of a training section: the loop names the training file (the mix, or a prefs stage's)."""

    train: Path | None = Field(None, description="set by the loop")  # type: ignore[assignment]


class SFTSection(SFTRunConfig):
    """The ``sft:`` (and ``rft:``) section: an SFT run config whose model, data.train and output_dir the loop sets."""

    model: TrainModelSection = Field(default_factory=lambda: TrainModelSection.model_validate({}))  # type: ignore[assignment]
    data: TrainDataSection = Field(default_factory=lambda: TrainDataSection.model_validate({}))  # type: ignore[assignment]
    output_dir: Path | None = Field(None, description="set by the loop")  # type: ignore[assignment]


class DPOSection(DPORunConfig):
    """The ``dpo:`` section: a DPO run config whose model, data.train and output_dir the loop sets."""

    model: TrainModelSection = Field(default_factory=lambda: TrainModelSection.model_validate({}))  # type: ignore[assignment]
    data: TrainDataSection = Field(default_factory=lambda: TrainDataSection.model_validate({}))  # type: ignore[assignment]
    output_dir: Path | None = Field(None, description="set by the loop")  # type: ignore[assignment]


class ImportSection(BaseModel):
    """A public corpus imported as the raw dialogs (``sage-dialog import``); its openings become the seeds."""

    model_config = ConfigDict(extra="forbid")
    corpus: Literal["chitchat", "empathetic", "esconv"] = "chitchat"
    file: Path | None = Field(None, description="the corpus file; chitchat: default the installed package's")
    limit: int | None = Field(None, ge=1, description="dialogs to import")
    min_turns: int = Field(2, ge=1, description="skip shorter dialogs")
    max_turns: int | None = Field(None, ge=1, description="cut longer dialogs to their first N turns")


# every round is three stages and a model on disk; far more than anyone runs, far less than a loop forever
MAX_ROUNDS = 100


class LoopConfig(BaseModel):
    """One YAML file for the whole loop. Stage sections take the fields of that stage's own config."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    run_dir: Path
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (1 makes CPU runs repeatable "
                                "to the last digit; null: torch's default)")
    engine: EngineSettings = engine_field()  # annotate and search: local or ray (a section's own engine wins)
    world: WorldSection | None = Field(None, description="a world plug-in (e.g. sandbox): raw dialogs, seeds, "
                                       "base model and an evaluate stage (see pipeline.world)")
    base_model: str | None = Field(None, description="hub id or local folder of the model to fine-tune into M1 "
                                   "(null with a world: the world builds one)")
    raw: list[Path] = Field(default_factory=list, description="dialog files to annotate (any readable dialog format)")
    import_: ImportSection | None = Field(None, alias="import", description="a corpus to import and annotate too")
    prompt: str = Field("", description="the data spec prompt prefixed to every assistant turn")
    annotate: AnnotateSection = Field(default_factory=lambda: AnnotateSection.model_validate({"annotator": "oracle"}),
                                      description="the annotation of the raw dialogs (stages.annotate.Settings, "
                                      "plus the LLM annotator's few_shot and prompt files); engine and cache "
                                      "default to the loop's")
    mix: MixSettings = Field(default_factory=lambda: MixSettings.model_validate({}),
                             description="the mix (stages.mix.Settings); its seed defaults to the loop's")
    sft: SFTSection = Field(default_factory=lambda: SFTSection.model_validate({}),
                            description="SFT run config (train sft) except the model, data.train and output_dir, "
                            "which the loop sets")
    rounds: int = Field(1, ge=0, le=MAX_ROUNDS, description="rejection-sampling rounds (search, prefs, SFT) before DPO")
    rft: SFTSection | None = Field(None, description="SFT config of the rounds (default: the sft section)")
    search: SearchRunConfig = Field(default_factory=lambda: SearchRunConfig.model_validate({}),
                                    description="the search (stages.search.stage.SearchRunConfig) except assistant "
                                    "and out; seeds default to the world's or the import's, cache and backend "
                                    "options to the loop's")
    prefs: PrefsSettings = Field(default_factory=lambda: PrefsSettings.model_validate({}),
                                 description="the pairs of each search (stages.prefs.Settings)")
    dpo_pairs: Literal["search", "last_round"] = Field(
        "search", description="search: DPO on the pairs of a new search from the last model (the original); "
        "last_round: on the pairs of the last rejection-sampling round (no extra search)")
    dpo: DPOSection = Field(default_factory=lambda: DPOSection.model_validate({}),
                            description="DPO run config (train dpo) except the model, data.train and output_dir, "
                            "which the loop sets")
    rl: RLSettings | None = Field(None, description="online multi-turn RL (stages.rl.Settings) from the last SFT model "
                                  "(the model DPO starts from), beside DPO; null: no rl stage")
    compare: CompareConfig | None = Field(default_factory=lambda: CompareConfig.model_validate({}),
                                          description="the comparison (stages.compare.CompareConfig) except out and "
                                          "models, which the loop sets (seeds default to search's); null: no compare "
                                          "stage")
    launcher: list[str] | None = Field(
        None, description="command that runs the training stages in their own processes, e.g. "
        "[accelerate, launch, --config_file, CONFIG] for DeepSpeed/FSDP on many GPUs; null: in-process")
    provider: Literal["hf", "vllm"] = Field("hf", description="backend that serves the loop's own models")
    backend_options: dict[str, Any] = Field(default_factory=dict,
                                            description="options of the backends serving the loop's own models")
    compare_base: bool = Field(False, description="also compare the base model as it is (before any training)")
    benchmarks: BenchmarksSettings | None = Field(None, description="lm-eval tasks (default EQ-Bench, shipped) on "
                                                  "base, SFT, DPO...; their table joins the compare report")
    steerability: SteerabilitySettings | None = Field(None, description="steering compliance of M1 (stages."
                                                      "steerability.Settings): forced actions, judged oracle-free "
                                                      "by the annotator (same label sets)")
    cache: str | None = Field(None, description="shared response cache; default: RUN_DIR/cache.sqlite")
    gates: GatesConfig = Field(default_factory=GatesConfig, description="thresholds that stop the run between stages")

    def cache_path(self) -> str:
        return self.cache or str(self.run_dir / "cache.sqlite")

    @model_validator(mode="after")
    def _loop_fills(self) -> LoopConfig:
        if self.dpo_pairs == "last_round" and self.rounds < 1:
            raise ValueError("dpo_pairs: last_round needs rounds >= 1")
        if self.steerability is not None and not self.steerability.actions:
            raise ValueError("steerability.actions: give the forced actions, each \"a_motivation=X a_emotion=Y\"")
        for k in ("assistant", "out"):
            if getattr(self.search, k) is not None:
                raise ValueError(f"search.{k} is set by the loop (the model of each round, the stage folder)")
        return self

    def annotate_settings(self) -> AnnotateSettings:
        """The annotate section's settings with the loop's engine and cache where the section sets none,
        and the loop's backend options under the section's own when the annotator runs on the loop's
        provider (as search's judge and user do: one base in memory, one dtype)."""
        s = self.annotate
        fill: dict[str, Any] = {k: v for k, v in (("engine", self.engine), ("cache", self.cache_path()))
                                if k not in s.model_fields_set}
        spec = s.annotator.spec if isinstance(s.annotator, BackendConfig) else str(s.annotator)
        if self.backend_options and spec.startswith(f"{self.provider}:"):
            fill["backend_options"] = {**self.backend_options, **s.backend_options}
        return AnnotateSettings.of(s).model_copy(update=fill)
