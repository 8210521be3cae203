"""The sandbox as a plug-in: importing this module registers its oracle roles with the role factory
and its world stages with the SAGE loop.

Lower layers never import ``sandbox/``; they load this module by its plug-in name ``sandbox``
(:func:`sage_dialog.core.plugins.load`): the role factory when a config names the role ``oracle``,
the loop when a config has ``world: {name: sandbox}``, and the ``demo`` command for the shipped
config (:data:`DEMO_CONFIG`).
"""

from __future__ import annotations

from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Tags
from sage_dialog.pipeline.world import register_world
from sage_dialog.roles.factory import register_oracle_provider
from sage_dialog.sandbox import world
from sage_dialog.sandbox.demo import DEMO_CONFIG, SandboxWorld
from sage_dialog.sandbox.oracles import oracle_for

__all__ = ["DEMO_CONFIG", "QUICK", "SandboxOracles"]

# `sage-dialog demo --quick`: about a third of the work, for CI
QUICK = ["world.corpus.n_dialogs=400", "sft.train.epochs=4.0", "world.corpus.search_seeds=48",
         "world.eval.seeds=48", "world.eval.steer_contexts=10", "world.eval.n_boot=1000"]


class SandboxOracles:
    """The sandbox world behind every ``"oracle"`` role spec."""

    def oracle(self, role: str, **kw: Any) -> Any:
        variant = kw.pop("variant", None)  # oracle:VARIANT names a preset of the world's rules
        if variant is not None:
            if role not in ("user", "selector", "pairwise", "reward"):
                raise UserError(f"oracle:{variant}: the {role} oracle has no rules variants")
            kw["rules"] = variant
        return oracle_for(role, **kw)

    def seed_openings(self, n: int, seed: int) -> list[str]:
        return world.seed_openings(n, seed)

    def actions(self) -> list[Tags]:
        return [world.action_tags(k, None).model_copy(update={"topics": None}) for k in world.ACTIONS]


register_oracle_provider(SandboxOracles())
register_world("sandbox", SandboxWorld())
