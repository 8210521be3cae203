"""The web UI in a real headless Chromium (Debian package) driven by Playwright, fully offline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sage_dialog.core import io as sio
from sage_dialog.core.schema import PreferencePair, Tags
from tests.support import start_process

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def webui(tiny_model: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    prefs = tmp_path / "prefs.jsonl"
    args = ["webui", "--model", f"hf:{tiny_model}", "--prefs", str(prefs), "--max-tokens", "12", "--seed", "0"]
    env = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with start_process(args, env=env, ready="", timeout_s=180, what="web UI") as served:
        yield served.base, prefs


def test_send_edit_latent_regenerate_keep(webui: tuple[str, Path]) -> None:
    base, prefs = webui
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
            page.goto(base)
            expect = sync_api.expect
            expect.set_options(timeout=120_000)  # generation on a busy 2-core box can take longer than 5 s

            # send a message: the reply appears and the side panel shows the latent read/chosen
            page.locator("#msg textarea").fill("I failed my exam again.")
            page.locator("#msg textarea").press("Enter")
            expect(page.locator("#chatbot")).to_contain_text("I failed my exam again.")
            expect(page.locator("#latent")).to_contain_text("Action chosen")
            expect(page.locator("#latent")).not_to_contain_text("generating")

            # edit the latent and regenerate: the new reply carries the forced action
            for key, value in (("a_motivation", "joke"), ("a_emotion", "playful"), ("a_topic", "exam")):
                page.locator(f"#{key} textarea, #{key} input").first.fill(value)
            page.locator("#regen").click()
            expect(page.locator("#latent")).to_contain_text("motivation joke · emotion playful · topics exam")
            expect(page.locator("#latent")).to_contain_text("steered:")
            expect(page.locator("#status")).to_contain_text("Candidate 2 of 2")

            # the earlier candidate is still there: step back to it and forward again
            page.locator("#cand-prev").click()
            expect(page.locator("#status")).to_contain_text("Candidate 1 of 2")
            expect(page.locator("#latent")).not_to_contain_text("steered:")
            page.locator("#cand-next").click()
            expect(page.locator("#status")).to_contain_text("Candidate 2 of 2")
            expect(page.locator("#latent")).to_contain_text("motivation joke · emotion playful · topics exam")

            # keep it: the preference file appears with the kept reply as chosen
            page.locator("#keep").click()
            expect(page.locator("#status")).to_contain_text("wrote 1 preference pair")

            # "Edit last latent" copies the reply's latent into the panel
            page.locator("#a_emotion textarea, #a_emotion input").first.fill("")
            page.locator("#edit-latent").click()
            expect(page.locator("#a_emotion textarea, #a_emotion input").first).to_have_value("playful")
        finally:
            browser.close()

    (pair,) = list(sio.read_jsonl(prefs, PreferencePair))
    assert pair.source == "webui"
    assert [t.role for t in pair.history] == ["user"] and pair.history[0].text == "I failed my exam again."
    assert pair.chosen.action == Tags(motivation="joke", emotion="playful", topics=["exam"])
    assert pair.rejected != pair.chosen
    assert outside == [], f"the page reached outside the server: {outside[:5]}"
