"""The search-tree view: text and HTML renderings, ``sage-dialog trees``, and ``trees.html`` after a search."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sage_dialog import cli
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import write_jsonl
from sage_dialog.core.schema import ActionBranch, SearchNode, Tags
from sage_dialog.pipeline.runner import Stage, run_stages
from sage_dialog.roles.selector import LLMSelector
from sage_dialog.roles.user_simulator import LLMUserSimulator
from sage_dialog.stages.search import view
from sage_dialog.stages.search.config import LatentConfig, SearchConfig
from sage_dialog.stages.search.search import run_search
from sage_dialog.stages.search.tree import read_tree

EVIL = "<script>alert('x')</script> & \x1b[31mred"


def _tree(name: str = "seed-0000", reply: str = "That sounds hard.") -> list[SearchNode]:
    """A latent decision by hand: three actions weighed at the root, the second chosen."""
    calm, joke, advice = (Tags(motivation="comfort", emotion="calm"), Tags(motivation="joke", emotion="playful"),
                          Tags(motivation="advice", topics=["exam"]))
    branches = [ActionBranch(action=joke, prior=0.25, visits=1, value=0.1, replies=["a1"]),
                ActionBranch(action=calm, prior=0.6, visits=2, value=0.75, replies=["a2", "a3"], chosen=True),
                ActionBranch(action=advice, prior=0.15)]  # proposed, never realised
    state = Tags(motivation="venting", emotion="sad")
    return [
        SearchNode(id="u0", tree=name, depth=0, role="user", text="I failed my exam.", branches=branches),
        SearchNode(id="a1", tree=name, parent="u0", depth=1, role="assistant", text="Ha, exams!", state=state,
                   action=joke, kept=False, score=0.1, branch=0),
        SearchNode(id="a2", tree=name, parent="u0", depth=1, role="assistant", text=reply, state=state, action=calm,
                   score=0.9, branch=1),
        SearchNode(id="a3", tree=name, parent="u0", depth=1, role="assistant", text="Oh no.", state=state,
                   action=calm, kept=False, score=0.6, branch=1),
        SearchNode(id="u1", tree=name, parent="a2", depth=2, role="user", text="Yes, it really is."),
    ]


class _Tags(HTMLParser):
    """Every start tag of a page and whether the nesting of the tree's elements balances."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[str] = []
        self.stack: list[str] = []
        self.ok = True

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.starts.append(tag)
        if tag in ("ul", "li", "details", "table"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("ul", "li", "details", "table"):
            self.ok = self.ok and bool(self.stack) and self.stack.pop() == tag


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    p.close()
    return p


def test_text_view_shows_branches_tags_scores_and_the_chosen_action():
    text = view.render_text({"seed-0000": _tree()})
    lines = text.splitlines()
    assert "== seed-0000 (5 nodes; 1 latent decision)" in lines
    assert "* u0 user: I failed my exam." in lines
    branch = [ln.strip() for ln in lines if re.match(r"\s+(=>)?\s*#\d ", ln)]
    assert branch == [
        "#0 joke/playful     prior 0.250  visits 1  value 0.100  replies a1",
        "=> #1 comfort/calm     prior 0.600  visits 2  value 0.750  replies a2 a3",
        "#2 advice/- [exam]  prior 0.150  visits 0  value -  replies -",
    ]
    # the dropped alternatives come before the kept reply the dialog went on from, then its subtree
    nodes = [ln.strip().split(" ")[1] for ln in lines if re.match(r"\s*[*-] [au]\d ", ln)]
    assert nodes == ["u0", "a1", "a3", "a2", "u1"]
    assert "  * a2 assistant [venting/sad -> comfort/calm] action #1 score 0.900: That sounds hard." in lines
    assert "  - a1 assistant [venting/sad -> joke/playful] action #0 score 0.100: Ha, exams!" in lines


def test_text_view_shortens_replies_and_escapes_terminal_controls():
    text = view.render_text({"t": _tree(reply=EVIL + " word" * 60)}, width=60)
    line = next(ln for ln in text.splitlines() if " a2 assistant " in ln)
    assert "\x1b" not in text and "\\x1b[31mred" in line
    assert line.endswith("\u2026") and len(line.split(": ", 1)[1]) == 60


def test_html_view_escapes_dialog_text_and_marks_the_chosen_branch():
    trees = {"seed-0000": _tree(reply=EVIL), "<img src=x onerror=alert(1)>": _tree("<img src=x onerror=alert(1)>")}
    page = view.render_html(trees)
    tags = _parse(page)
    assert tags.ok and not tags.stack
    # hostile text stays text: no script or img element, the escaped form is there
    assert "script" not in tags.starts and "img" not in tags.starts
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; \\x1b[31mred" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "default-src 'none'" in page and "http" not in page.replace("http-equiv", "")
    chosen = re.findall(r'<tr class="chosen">(.*?)</tr>', page)
    assert len(chosen) == 2 and all("comfort/calm" in row and ">0.600<" in row and ">2<" in row for row in chosen)
    # the replies of a branch link to their nodes
    first = re.findall(r'<tr class="other"><td class="n">0</td>(.*?)</tr>', page)[0]
    target = re.search(r'href="#([^"]+)">a1<', first).group(1)
    assert re.search(rf'<li class="node dropped assistant" id="{target}">', page)


def test_html_view_is_capped_and_says_what_it_left_out(tmp_path):
    trees = {f"seed-{i:04d}": _tree(f"seed-{i:04d}") for i in range(5)}
    page = view.render_html(trees, max_trees=2)
    assert page.count('<details class="tree"') == 2 and "seed-0002" not in page
    assert "3 more trees not shown (of 5;" in page
    assert "1 more tree not shown (of 5;" in view.render_text(trees, max_trees=4)
    assert view.write_html(trees, tmp_path / "v.html", max_trees=2) == 2
    assert (tmp_path / "v.html").read_text(encoding="utf-8") == page
    with pytest.raises(UserError, match="--max-trees 0"):
        view.render_html(trees, max_trees=0)


def test_unreachable_nodes_are_counted_not_looped_over():
    nodes = _tree()
    loop = [SearchNode(id="x", tree="seed-0000", parent="y", depth=3, role="user", text="x"),
            SearchNode(id="y", tree="seed-0000", parent="x", depth=4, role="user", text="y")]
    text = view.render_text({"seed-0000": nodes + loop})
    assert "(5 nodes; 1 latent decision; 2 nodes not reachable from the root, not shown)" in text


def _search(scripted, out: Path, strategy: str) -> Path:
    be = scripted()
    latent = LatentConfig(action_set="sandbox", k=3, replies=2, simulations=5, batch=2)
    return run_search(be, LLMUserSimulator(be), LLMSelector(be, mode="logprob"),
                      ["I failed my driving test <script>x</script>", "My sister is getting married!"],
                      SearchConfig(strategy=strategy, turns=2, latent=latent), out, transcripts=False)


@pytest.mark.parametrize("strategy", ["latent", "mcts"])
def test_search_writes_the_view_and_the_command_prints_it(scripted, tmp_path, capsys, strategy):
    out = _search(scripted, tmp_path / "s", strategy)
    page = (out / "trees.html").read_text(encoding="utf-8")
    assert "trees.html" in json.loads((out / "manifest.json").read_text())["outputs"]
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script" not in page
    trees = [read_tree(p) for p in sorted((out / "trees").glob("seed-*.jsonl"))]
    decisions = [n for t in trees for n in t if n.branches]
    assert len(decisions) == 4  # two per tree
    assert page.count('<tr class="chosen">') == 4
    for n in decisions:  # every weighed action with its numbers
        for b in n.branches or []:
            assert f">{b.prior:.3f}<" in page and view.format_tags(b.action) in page

    assert cli.main(["trees", str(out)]) == 0
    text = capsys.readouterr().out
    chosen = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("=> #")]
    assert len(chosen) == 4
    for n in decisions:
        b = next(b for b in n.branches or [] if b.chosen)
        want = f"prior {b.prior:.3f}  visits {b.visits}  value {view._num(b.value)}  replies {' '.join(b.replies)}"
        assert any(ln.endswith(want) for ln in chosen), (want, chosen)

    assert cli.main(["trees", str(out / "trees" / "seed-0001.jsonl"), "--max-trees", "1"]) == 0
    assert "== seed-0001" in capsys.readouterr().out
    assert cli.main(["trees", str(out), "--tree", "seed-0001", "--html", str(tmp_path / "one.html")]) == 0
    assert "wrote 1 of 1 tree" in capsys.readouterr().out
    one = (tmp_path / "one.html").read_text(encoding="utf-8")
    assert "seed-0001" in one and "seed-0000" not in one
    (out / "trees.html").unlink()
    assert cli.main(["trees", str(out), "--html", str(out / "trees.html")]) == 0
    assert (out / "trees.html").read_text(encoding="utf-8") == page  # the same page as the search wrote


def test_the_run_runner_skips_a_finished_search_with_its_view(scripted, tmp_path):
    calls: list[int] = []

    def fn(ctx):
        calls.append(1)
        _search(scripted, ctx.out_dir, "mcts")
        return {"seeds": 2}

    stages = [Stage("search", fn, config={"strategy": "mcts"})]
    first = run_stages(stages, tmp_path / "run", log=lambda _: None)
    assert first[0].status == "ran" and (tmp_path / "run" / "search" / "trees.html").is_file()
    manifest = json.loads((tmp_path / "run" / "search" / "manifest.json").read_text())
    assert "trees.html" in manifest["outputs"]
    again = run_stages(stages, tmp_path / "run", log=lambda _: None)
    assert again[0].status == "skipped" and len(calls) == 1


def _fail(args: list[str], capsys) -> str:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") >= 1
    return err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    page = tmp_path / "out.html"
    err = _fail(["trees", str(tmp_path / "missing"), "--html", str(page)], capsys)
    assert "missing: no such file or folder" in err
    good = tmp_path / "good.jsonl"
    write_jsonl(good, _tree())
    err = _fail(["trees", str(good), "--tree", "seed-9", "--html", str(page)], capsys)
    assert "--tree seed-9: no tree of that name" in err and "trees: seed-0000" in err
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [*_tree(), SearchNode(id="z", tree="seed-0000", parent="nope", depth=1, role="user", text="z")])
    err = _fail(["trees", str(bad), "--html", str(page)], capsys)
    assert "bad.jsonl: record 6: field parent: parent 'nope' is not a node of tree 'seed-0000'" in err
    bad.write_text('{"kind": "node", "id": "u0", "tree": "t", "depth": "deep", "role": "user", "text": "x"}\n')
    err = _fail(["trees", str(bad), "--html", str(page)], capsys)
    assert "bad.jsonl: record 1" in err and "depth" in err
    err = _fail(["trees", str(good), "--max-trees", "0"], capsys)
    assert err == "error: --max-trees 0: must be at least 1\n"
    err = _fail(["trees", str(good), "--html", str(tmp_path)], capsys)
    assert "is a folder, expected an output file" in err
    err = _fail(["trees", str(tmp_path), "--html", str(good)], capsys)  # would overwrite a tree
    assert "output would overwrite the input" in err and good.read_text().startswith('{"v"')
    assert not page.exists() and not list(tmp_path.glob(".out.html*"))
