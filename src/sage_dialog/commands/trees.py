"""Show search trees with their action branches, in the terminal or as one HTML page.

Every node of a tree written by `sage-dialog search`: role, the latent tags of the turn
(state -> action), a shortened reply, the judge score, and whether it is on the best path (*).
Decisions of `--strategy latent` / `mcts` also list the actions they weighed: prior, visits, value,
the replies that realised each, and the one the search chose (=>). PATH is a search output folder,
its trees/ folder or one tree JSONL file. `sage-dialog search` writes the same page to
OUT/trees.html after every search.

Example:
  sage-dialog trees runs/mcts                           # every tree as text (at most --max-trees)
  sage-dialog trees runs/mcts --tree seed-0003          # one tree
  sage-dialog trees runs/mcts --html mcts-trees.html    # one self-contained page, no scripts
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.stages.search.view import DEFAULT_MAX_TREES


class TreesSettings(BaseModel):
    """Settings of ``sage-dialog trees``."""

    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="search output folder, its trees/ folder, or a tree .jsonl file")
    tree: str | None = Field(None, description="only the tree called NAME (e.g. seed-0003)")
    html: Path | None = Field(None, description="write one self-contained HTML page instead of text")
    max_trees: int = Field(DEFAULT_MAX_TREES, description="show at most N trees; a line says how many were left out")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags

    add_config_flags(p, TreesSettings, positional=["path"],
                     extra={"tree": {"metavar": "NAME"}, "html": {"metavar": "OUT.html"}, "max_trees": {"metavar": "N"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args, settings_into
    from sage_dialog.core.errors import UserError
    from sage_dialog.core.io import check_paths
    from sage_dialog.stages.search import view

    args = settings_into(args, config_from_args(TreesSettings, args))
    if args.max_trees < 1:
        raise UserError(f"--max-trees {args.max_trees}: must be at least 1")
    # the trees are the input: RUN/trees.html beside them is fine, RUN/trees/seed-0000.jsonl is refused
    source = view.tree_source(args.path)
    check_paths(inputs=[source], files=[args.html])
    trees = view.load_trees(source)
    if args.tree is not None:
        trees = view.pick_tree(trees, args.tree, args.path)
    if args.html is None:
        print(view.render_text(trees, max_trees=args.max_trees), end="")
        return 0
    shown = view.write_html(trees, args.html, max_trees=args.max_trees)
    print(f"wrote {shown} of {len(trees)} tree{'s' * (len(trees) != 1)} -> {args.html}")
    return 0
