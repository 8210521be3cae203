"""State-level RL, online: the policy plays whole dialogs, credit lands on the State-Action Chain's actions.

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings` (the ``rl:`` section of a
run config), :class:`Inputs`, :class:`Result` and :func:`run`. ``sage-dialog train rl CONFIG`` runs it
from a :class:`RunConfig` (the settings plus model, seeds and output folder). See docs/rl.md.
"""

from sage_dialog.stages.rl.settings import RunConfig, Settings
from sage_dialog.stages.rl.stage import Inputs, Result, run

__all__ = ["Inputs", "Result", "RunConfig", "Settings", "run"]
