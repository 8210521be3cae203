"""The launch files of configs/launch/ render and parse.

Each is run with ``DRY_RUN=1`` (and the environment Slurm or SkyPilot would give it), which prints
the commands instead of running them; every printed ``accelerate launch`` line is parsed by
accelerate's own argument parser and every ``sage-dialog`` line by ours. The sbatch header keys are
checked against sbatch's long options; the SkyPilot task against the task schema of SkyPilot's docs
(the ``skypilot`` package pulls in cloud SDKs and is not installed here), written out below.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "configs" / "launch"

# sbatch long options used by cluster scripts (man sbatch); a misspelt key is ignored by sbatch
SBATCH_KEYS = {"job-name", "nodes", "ntasks", "ntasks-per-node", "gpus", "gpus-per-node", "gres", "cpus-per-task",
               "cpus-per-gpu", "mem", "mem-per-gpu", "mem-per-cpu", "exclusive", "time", "output", "error",
               "partition", "account", "qos", "constraint", "signal", "requeue", "array", "mail-type", "mail-user"}
# SkyPilot task YAML (docs.skypilot.co, "YAML spec"): top-level and resources keys
SKY_TOP = {"name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts", "setup", "run",
           "config", "volumes", "service"}
SKY_RESOURCES = {"cloud", "region", "zone", "accelerators", "accelerator_args", "cpus", "memory", "instance_type",
                 "use_spot", "disk_size", "disk_tier", "ports", "image_id", "labels", "any_of", "ordered",
                 "infra", "network_tier", "job_recovery", "autostop"}


def _parse_commands(lines: list[str]) -> dict[str, int]:
    """Parse each rendered command with its real parser; count them by kind."""
    from accelerate.commands.launch import launch_command_parser

    from sage_dialog import cli

    seen = {"accelerate": 0, "sage-dialog": 0}
    for line in lines:
        argv = shlex.split(line)
        if "bash" in argv and "-c" in argv:  # srun ... bash -c "accelerate launch ..."
            argv = shlex.split(argv[argv.index("-c") + 1].replace("$SLURM_NODEID", "1"))
        if "accelerate" in argv:
            args = launch_command_parser().parse_args(argv[argv.index("accelerate") + 2:])
            assert args.module and args.training_script == "sage_dialog"
            assert args.num_machines == 2 and args.num_processes == 16
            assert args.main_process_ip == "10.0.0.1" and args.machine_rank in (0, 1)
            assert args.training_script_args[:2] == ["train", "sft"]
            seen["accelerate"] += 1
            argv = ["sage-dialog", *args.training_script_args]
        if "sage-dialog" in argv:
            rest = argv[argv.index("sage-dialog") + 1:]
            parser, _ = cli.build_parser(rest[0])
            ns = parser.parse_args(rest[1:])
            if rest[0] == "search":
                assert ns.ray == "10.0.0.1:6379" and ns.assistant.startswith("vllm:")
            seen["sage-dialog"] += 1
    return seen


def _render(cmd: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    r = subprocess.run(cmd, env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", **env}, capture_output=True, text=True, cwd=cwd,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.strip()]


def test_slurm_script_header_and_commands(tmp_path):
    path = LAUNCH / "slurm-2node-sft-search.sbatch"
    text = path.read_text()
    assert text.splitlines()[1].startswith("# sbatch configs/launch/")
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    header = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            header[key] = value
        elif line and not line.startswith("#"):
            break  # sbatch reads options only before the first command
    assert set(header) <= SBATCH_KEYS, set(header) - SBATCH_KEYS
    assert header["nodes"] == "2" and header["ntasks-per-node"] == "1" and header["gpus-per-node"] == "8"
    lines = _render(["bash", str(path)], {"SLURM_JOB_ID": "42", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "n[0-1]",
                                          "RUN": str(tmp_path / "run")}, tmp_path)
    assert _parse_commands(lines) == {"accelerate": 1, "sage-dialog": 3}  # train sft, export, search


def test_skypilot_task_schema_and_commands(tmp_path):
    path = LAUNCH / "skypilot-2node-sft-search.yaml"
    task = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("# sky launch -c sage configs/launch/")
    assert set(task) <= SKY_TOP, set(task) - SKY_TOP
    assert set(task["resources"]) <= SKY_RESOURCES
    assert task["num_nodes"] == 2 and task["resources"]["accelerators"] == "H100:8"
    assert all(isinstance(v, str) for v in task["envs"].values())  # SkyPilot env values are strings
    seen = {"accelerate": 0, "sage-dialog": 0}
    for rank in (0, 1):
        env = {**task["envs"], "RUN": str(tmp_path / "run"), "SKYPILOT_NODE_RANK": str(rank),
               "SKYPILOT_NODE_IPS": "10.0.0.1\n10.0.0.2", "SKYPILOT_NUM_GPUS_PER_NODE": "8"}
        for k, v in _parse_commands(_render(["bash", "-c", task["run"]], env, tmp_path)).items():
            seen[k] += v
    assert seen == {"accelerate": 2, "sage-dialog": 2 + 2}  # sft on both nodes; export + search on node 0


@pytest.mark.parametrize("name", ["slurm-2node-sft-search.sbatch", "skypilot-2node-sft-search.yaml"])
def test_launch_files_name_files_that_exist(name):
    text = (LAUNCH / name).read_text()
    for ref in ("configs/train-sft-small.yaml", "src/sage_dialog/train/accelerate/deepspeed_zero3_offload.yaml"):
        assert ref in text and (ROOT / ref).exists()
