"""Training under ``accelerate launch`` with several processes, on CPU (gloo), on the tiny model.

* 2 processes train like 1 with the same global batch (2 x 2 vs 1 x 4): the same optimizer steps and a
  final loss within ``LOSS_RTOL``; rank 0 alone writes the outputs (one summary, one manifest; the
  other rank's log has a name of its own).
* ``kill -9`` of one rank mid-run, then the same command with ``--resume``: the run continues from
  the last complete checkpoint to the end.
* two "machines" on one box: two ``accelerate launch`` processes with ``--num_machines 2`` and
  ``--machine_rank 0/1`` rendezvous over 127.0.0.1 and train the same run as 2 processes on one
  machine (same loss).
* FSDP2 cannot run on CPU (see the skip reason); asking for it there is a clear error.

Note: on a CPU box the 2-process launch is ``--multi_gpu`` (accelerate's torchrun launcher; the
processes run on CPU over gloo). ``accelerate launch --cpu --num_processes 2`` starts ONE process.

``train rl`` is in too (same steps, rank-0 outputs; its loss is not compared: each rank samples its own
rollouts, seeded by its rank). A new trainer stage is one entry in ``STAGES``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port

from .helpers import accelerate, child_env, dpo_rows, run, sft_rows, write_jsonl

pytestmark = pytest.mark.slow

LOSS_RTOL = 0.02  # 2 ranks x 2 vs 1 x 4: same samples per step; float sums in another order, padding per rank
STEPS = 6


@dataclass(frozen=True)
class Case:
    """One stage under launch: its input, flags for a short deterministic run, batch per process."""

    write: Callable[[Path], Path]  # writes the stage's input file into a folder
    flag: str  # the input's flag
    overrides: tuple[str, ...]
    one: tuple[str, ...]  # the 1-process run's batch
    two: tuple[str, ...]  # each of 2 processes (the same global batch)
    summary: str  # written by rank 0
    same_loss: bool  # False where ranks sample their own data (rl: rollouts seeded per rank)


def _jsonl(rows: Callable[[], list], name: str) -> Callable[[Path], Path]:
    return lambda d: write_jsonl(d / name, rows())


def _openings(d: Path) -> Path:
    p = d / "openings.txt"
    p.write_text("I feel sad about my exam.\nI'm nervous about the job.\nMy boss makes me so angry.\n"
                 "I feel hopeful about my sister.\n")
    return p


_SUPERVISED = ("adapter.dropout=0", "train.learning_rate=1e-3", "train.logging_steps=1", "train.save_steps=1000",
               "train.seed=0")  # no LoRA dropout: each rank would draw its own masks
# the stages trained under launch; a new trainer stage is one more entry here
STAGES: dict[str, Case] = {
    "sft": Case(_jsonl(sft_rows, "sft.jsonl"), "--data", _SUPERVISED, ("train.batch_size=4",),
                ("train.batch_size=2",), "training_summary.json", True),
    "dpo": Case(_jsonl(dpo_rows, "dpo.jsonl"), "--data", _SUPERVISED, ("train.batch_size=4",),
                ("train.batch_size=2",), "training_summary.json", True),
    "rl": Case(_openings, "--seeds", (
        "adapter.method=full", "rollout.turns=2", "rollout.max_tokens=24", "train.prompts_per_step=2",
        "train.group_size=2", "train.device=cpu", "train.save_steps=1000", "gates.stall_steps=null", "credit=turn",
        "rollout.user=oracle:long_horizon", "reward.oracle=oracle:long_horizon"), (), (), "rl_summary.json", False),
}
MULTI = ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _args(stage: str, model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    case = STAGES[stage]
    return ["train", stage, "--model", str(model), case.flag, str(data), "-o", str(out), *case.overrides, *extra]


def _summary(out: Path, stage: str = "sft") -> dict:
    return json.loads((out / STAGES[stage].summary).read_text())


def _launch_two(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    port = str(free_port())
    return run(accelerate(*MULTI, "--num_processes", "2", "--num_machines", "1", "--main_process_port", port,
                          "-m", "sage_dialog", *args), timeout=timeout)


@pytest.fixture(scope="module")
def two_proc_runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stage trained once with 2 processes: shared by the checks below."""
    root = tmp_path_factory.mktemp("two-proc")
    outs = {}
    for stage, case in STAGES.items():
        data = case.write(root)
        out = root / f"{stage}-2p"
        r = _launch_two(_args(stage, tiny_model, data, out, "--max-steps", str(STEPS), *case.two))
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("wrote ") == 1, r.stdout  # one process reports
        outs[stage] = out
    return outs


@pytest.mark.parametrize("stage", list(STAGES))
def test_two_processes_match_one_with_the_same_global_batch(stage, two_proc_runs, tiny_model, tmp_path):
    from sage_dialog import cli

    case, out2 = STAGES[stage], two_proc_runs[stage]
    data = case.write(tmp_path)
    out1 = tmp_path / f"{stage}-1p"
    # the 1-process reference: the same command in this process, with the same global batch
    assert cli.main(_args(stage, tiny_model, data, out1, "--max-steps", str(STEPS), *case.one, "threads=1")) == 0
    s1, s2 = _summary(out1, stage), _summary(out2, stage)
    assert s1["steps"] == s2["steps"] == STEPS
    if case.same_loss:
        print(f"{stage}: 1 process loss {s1['first_train_loss']:.4f} -> {s1['final_train_loss']:.4f}; "
              f"2 processes {s2['first_train_loss']:.4f} -> {s2['final_train_loss']:.4f}")
        assert s2["first_train_loss"] == pytest.approx(s1["first_train_loss"], rel=LOSS_RTOL)
        assert s2["final_train_loss"] == pytest.approx(s1["final_train_loss"], rel=LOSS_RTOL)
        assert s2["final_train_loss"] != pytest.approx(s2["first_train_loss"], rel=1e-3)  # it trained
    # rank 0 alone wrote the run's files; rank 1 kept a log of its own
    manifest = json.loads((out2 / "manifest.json").read_text())
    assert manifest["stage"] in (f"train-{stage}", stage)
    logs = sorted(p.name for p in (out2 / "logs").iterdir())
    assert logs == [f"train-{stage}.log", f"train-{stage}.rank1.log"]
    ckpt = out2 / f"checkpoint-{STEPS}"
    assert sorted(p.name for p in ckpt.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    if stage == "rl":  # each rank plays its own per-device batch; rank 0 counts and journals them all, once
        assert s2["dialogs"] == 2 * s1["dialogs"]
        assert len((out2 / "rollouts.jsonl").read_text().splitlines()) == s2["dialogs"]


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "sage_dialog" in " ".join(child.cmdline()):
                return int(child.pid)
        except psutil.Error:
            continue
    return None


def test_kill_9_of_one_rank_then_resume_from_the_last_checkpoint(tiny_model, tmp_path):
    from sage_dialog.train.launch import last_complete_checkpoint

    data = STAGES["sft"].write(tmp_path)
    out = tmp_path / "killed"
    max_steps = 60
    args = _args("sft", tiny_model, data, out, "--max-steps", str(max_steps), "train.batch_size=2",
                 "train.save_steps=10", "train.save_total_limit=10")
    port = str(free_port())
    cmd = accelerate(*MULTI, "--num_processes", "2", "--num_machines", "1", "--main_process_port", port,
                     "-m", "sage_dialog", *args)
    launcher = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint-10" / "trainer_state.json").exists():
            assert launcher.poll() is None, launcher.stdout.read()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint-10 in time"
            time.sleep(0.05)
        pid = _rank_pid(launcher, 1)
        assert pid is not None, "rank 1 not found among the launcher's children"
        os.kill(pid, signal.SIGKILL)
        rc = launcher.wait(timeout=180)  # torchrun's agent sees the lost rank and stops rank 0 too
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert rc != 0
    assert not (out / "training_summary.json").exists()  # the run did not finish
    last = last_complete_checkpoint(out)
    assert last is not None
    step = int(Path(last).name.split("-")[1])
    assert 10 <= step < max_steps
    r = _launch_two([*args, "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(out)
    assert s["resumed_from"] == last and s["steps"] == max_steps
    # every step logged once: the checkpoint's history, then the steps after it (none lost or repeated)
    assert [h["step"] for h in s["log_history"] if "loss" in h] == list(range(1, max_steps + 1))


def test_two_machines_rendezvous_over_loopback(two_proc_runs, tiny_model, tmp_path):
    """``--num_machines 2``: machine 0 hosts the rendezvous, machine 1 joins it; the run is the same
    as 2 processes on one machine (the same ranks see the same batches)."""
    data = STAGES["sft"].write(tmp_path)
    out = tmp_path / "two-machines"
    port = str(free_port())
    args = _args("sft", tiny_model, data, out, "--max-steps", str(STEPS), "train.batch_size=2")
    procs = [subprocess.Popen(
        accelerate(*MULTI, "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                   "--main_process_ip", "127.0.0.1", "--main_process_port", port, "-m", "sage_dialog", *args),
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for rank in (0, 1)]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert [o.count("wrote ") for o, _ in results] == [1, 0]  # machine 0 holds global rank 0
    s, ref = _summary(out), _summary(two_proc_runs["sft"])
    assert s["steps"] == ref["steps"] == STEPS
    assert s["final_train_loss"] == pytest.approx(ref["final_train_loss"], rel=1e-4)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


FSDP_ON_CPU = ("FSDP2 needs CUDA devices: accelerate 1.15 makes every CPU process group DDP over gloo "
               "(DistributedType.MULTI_CPU) and drops the FSDP plug-in, so there is no FSDP on CPU to test; "
               "benchmarks/gpu/check.sh runs the same launch on the GPU machine")


@pytest.mark.skipif(_cuda_devices() == 0, reason=FSDP_ON_CPU)
def test_fsdp2_launch_shards_and_trains(tiny_model, tmp_path):
    """The shipped fsdp.yaml as it is (FSDP2, bf16, sharded checkpoints), on 1 or 2 GPUs."""
    from importlib.resources import files

    config = str(files("sage_dialog.train") / "accelerate" / "fsdp.yaml")
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    out = tmp_path / "fsdp"
    n = str(min(2, _cuda_devices()))
    r = run(accelerate("--config_file", config, "--num_processes", n, "--main_process_port", str(free_port()),
                       "-m", "sage_dialog", *_args("sft", tiny_model, data, out, "--max-steps", str(STEPS),
                                                   "--method", "full", "train.batch_size=2",
                                                   "train.gradient_checkpointing=false")))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _summary(out)["steps"] == STEPS
    # FSDP's sharded state dict, not a DDP checkpoint
    assert list((out / f"checkpoint-{STEPS}").glob("pytorch_model_fsdp*")), sorted(
        p.name for p in (out / f"checkpoint-{STEPS}").iterdir())


def test_fsdp_on_cpu_is_a_clear_error_not_a_silent_ddp_run(monkeypatch):
    from sage_dialog.core.errors import UserError
    from sage_dialog.train.launch import check_launch

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match="FSDP needs GPUs"):
        check_launch("cpu")
    check_launch("cuda")  # on GPUs FSDP is the trainer's business


def test_deepspeed_without_the_package_names_the_extra(monkeypatch):
    import importlib.util

    from sage_dialog.core.errors import UserError
    from sage_dialog.train.launch import check_launch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'sage-dialog\[deepspeed\]'"):
        check_launch("cuda", Path("ds_zero3.json"))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # an accelerate DeepSpeed config, no train.deepspeed
    with pytest.raises(UserError, match="DeepSpeed is asked for"):
        check_launch("cuda")
