"""The layer rules of docs/design/architecture-notes.md, checked on the source with `ast`.

* A module imports only modules of its own layer or of layers below it:
  core < formats (+ labels, prompts) < backends < roles < train, stages < interact < pipeline
  < commands, cli; ``sandbox`` is the top layer (it may use anything).
* Nothing outside ``sandbox/`` imports ``sandbox``: the sandbox is reached only by its plug-in name
  (``sage_dialog.core.plugins``).
* No import cycles between modules (function-level and ``TYPE_CHECKING`` imports count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sage_dialog"

RANK = {
    "core": 0, "formats": 1, "labels": 1, "prompts": 1, "backends": 2, "roles": 3, "train": 4, "stages": 4,
    "interact": 5, "pipeline": 6, "commands": 7, "cli": 7, "__main__": 7, "__init__": 7, "sandbox": 8,
}


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every sage_dialog module ``path`` imports, at any depth (``from x import y`` counts y when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # imports under `if TYPE_CHECKING:` count too: a type that needs a module above, or one that
    # imports this one back, is a knot in the design even if nothing runs it
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sage_dialog")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sage_dialog"):
            found.add(node.module)
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists() or \
                        (SRC.parent / sub.replace(".", "/") / "__init__.py").exists():
                    found.add(sub)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in SRC.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_package_has_a_layer() -> None:
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert tops <= set(RANK), sorted(tops - set(RANK))


def test_lower_layers_never_import_upper_ones() -> None:
    bad = []
    for mod, imports in _graph().items():
        for imp in imports:
            if RANK[_layer(imp)] > RANK[_layer(mod)]:
                bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(sorted(bad))


def test_nothing_outside_the_sandbox_imports_it() -> None:
    bad = [f"{mod} imports {imp}" for mod, imports in _graph().items() for imp in imports
           if _layer(imp) == "sandbox" and _layer(mod) != "sandbox"]
    assert not bad, "\n".join(sorted(bad))


def _package_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles() -> None:
    graph = _graph()
    # importing a.b.c runs a/__init__ and a/b/__init__ first: a package's __init__ importing its own
    # submodules is the normal way in, not a cycle; edges into a package's own parents are dropped
    edges = {m: {i for i in imps if i in graph and i != m and i not in _package_parents(m)}
             for m, imps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join([*stack[stack.index(n):], n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rules above can fail: an upward import in a module is found."""
    p = tmp_path / "x.py"
    p.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sage_dialog.stages.base import StageResult\n"
                 "def f():\n    from sage_dialog.sandbox.oracles import oracle_for\n    import sage_dialog.pipeline.runner\n")
    assert {"sage_dialog.sandbox.oracles", "sage_dialog.pipeline.runner", "sage_dialog.stages.base"} <= _imports(p)


PROVIDERS = {"sage_dialog.backends.hf", "sage_dialog.backends.vllm_backend", "sage_dialog.backends.openai_backend",
             "sage_dialog.backends.mock"}


def test_private_names_stay_in_their_package_and_providers_share_none() -> None:
    """A private name (``_x``) is imported only inside its own package, and no backend provider
    imports another provider's private helpers."""
    bad = []
    for path in SRC.rglob("*.py"):
        mod = _module(path)
        package = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sage_dialog")):
                continue
            for a in node.names:
                if not a.name.startswith("_") or a.name.startswith("__"):
                    continue
                source_package = node.module if (SRC.parent / node.module.replace(".", "/")).is_dir() \
                    else node.module.rsplit(".", 1)[0]
                if source_package != package or (mod in PROVIDERS and node.module in PROVIDERS):
                    bad.append(f"{mod} imports {node.module}.{a.name}")
    assert not bad, "\n".join(sorted(bad))
