"""Named plug-ins, imported by name only when first asked for.

A plug-in is a module that, when imported, registers what it provides with the layer that uses it
(for example the sandbox registers its oracle roles with :mod:`sage_dialog.roles.factory` and its
world stages with :mod:`sage_dialog.pipeline.world`). Lower layers never import a plug-in's module
directly: they call :func:`load` with its name, so ``sandbox/`` stays an optional top layer that
nothing else imports. Third-party packages add plug-ins through the ``sage_dialog.plugins`` entry
point group (``name = "package.module"``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sage_dialog.core.errors import UserError

# the built-in plug-ins: name -> module (imported lazily)
BUILTIN: dict[str, str] = {"sandbox": "sage_dialog.sandbox.plugin"}

ENTRY_POINT_GROUP = "sage_dialog.plugins"


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str) -> ModuleType:
    """Import the plug-in ``name`` (built in or from an entry point); importing registers it."""
    target = BUILTIN.get(name) or _entry_points().get(name)
    if target is None:
        known = sorted({*BUILTIN, *_entry_points()})
        raise UserError(f"no plug-in named {name!r}; known: {', '.join(known)}")
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise UserError(f"plug-in {name!r} ({target}) cannot be imported: {e}") from None
