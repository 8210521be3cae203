"""What a training run needs to know about being one of several processes (``accelerate launch``).

``accelerate launch`` (or ``torchrun``, or Slurm's ``srun`` through either) starts one process per
device and tells each its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``;
``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED`` for the sharding plug-ins). The trainers do
the rest; this module holds the few checks and names that sit around them:

* :func:`rank` / :func:`is_main`: only the main process writes the run's files and prints.
* :func:`check_launch`: a launch the run cannot honour stops with one clear line instead of a
  traceback or, worse, a silently different run (FSDP asked for on CPU, DeepSpeed not installed).
* :func:`last_complete_checkpoint`: ``--resume`` after a ``kill -9`` takes the newest checkpoint
  whose ``trainer_state.json`` (written last) is there, never a half-written one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

from sage_dialog.core.errors import UserError

log = logging.getLogger(__name__)

DEEPSPEED_HINT = "pip install 'sage-dialog[deepspeed]' (or: pip install -c constraints.txt deepspeed)"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def rank() -> int:
    """This process's global rank (0 when not launched as one of several)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together (1 when not launched by accelerate/torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True on the process that writes the run's files (global rank 0)."""
    return rank() == 0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def check_launch(device: str, deepspeed_config: Path | None = None) -> None:
    """Refuse launches that would not run as asked, with the fix in the message.

    * DeepSpeed (a launch config or ``train.deepspeed``) without the package installed.
    * FSDP on CPU: accelerate 1.15 turns every CPU process group into plain DDP over gloo
      (``DistributedType.MULTI_CPU``) and drops the FSDP plug-in, so the model would be
      replicated, not sharded, with no word about it.
    """
    wants_ds = deepspeed_config is not None or _env_flag("ACCELERATE_USE_DEEPSPEED")
    if wants_ds and importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"DeepSpeed is asked for (train.deepspeed or an accelerate DeepSpeed config) but not "
                        f"installed: {DEEPSPEED_HINT}")
    if device == "cpu" and _env_flag("ACCELERATE_USE_FSDP"):
        raise UserError("FSDP needs GPUs: on CPU accelerate runs the processes as DDP over gloo and ignores the "
                        "FSDP config; launch without --config_file fsdp.yaml (use --multi_gpu) or on CUDA devices")


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder of ``output_dir`` that was written to the end.

    The trainer writes ``trainer_state.json`` after the weights, optimizer, scheduler and RNG
    states, so a folder without it is a checkpoint cut short (a killed rank, a lost node).
    """
    if not output_dir.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in output_dir.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    for _, p in found:
        if (p / "trainer_state.json").exists():
            return str(p)
        log.warning("train.resume: %s is incomplete (no trainer_state.json), skipping it", p)
    return None


__all__ = ["DEEPSPEED_HINT", "check_launch", "is_main", "last_complete_checkpoint", "rank", "world_size"]
