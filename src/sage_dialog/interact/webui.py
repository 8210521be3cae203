"""A browser chat (Gradio) with the latent in a side panel, editable before generating.

The side panel has one box per steerable field (``u_*`` = the state the model should read, ``a_*``
= the action it should take). Filled boxes are forced on every generation (send or regenerate) by
prefilling the assistant turn; empty boxes leave the choice to the model. Under the boxes the panel
shows the state the model read and the action it chose for the reply on screen; "Edit last latent"
copies them into the boxes.

"Regenerate" shows a new candidate for the last reply; the earlier ones stay, and "◀" / "▶" step
through them (the one on screen is the reply the dialog continues from). "Keep this one" writes the
reply on screen as *chosen* against every other candidate generated for the same context as
*rejected*, one :class:`schema.PreferencePair` per line, appended to the preferences file (the DPO
stage's input).

Nothing reaches the network: analytics are off, no share link, no web fonts, no server-side rendering.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sage_dialog.backends.base import Backend, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.io import JsonlJournal
from sage_dialog.core.schema import PreferencePair, Tags, Turn
from sage_dialog.roles.assistant import Candidate, format_tags, stream_turn
from sage_dialog.roles.rollout import history_messages
from sage_dialog.roles.sampling import CHAT_SAMPLING
from sage_dialog.roles.steering import STEER_KEYS, parse_steering

# set before gradio is imported anywhere: no usage analytics calls
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

FIELDS = list(STEER_KEYS)  # u_motivation .. a_topic, the order of the panel's boxes


@dataclass
class WebState:
    """One browser session: the dialog so far and every candidate for the last reply."""

    turns: list[Turn] = field(default_factory=list)  # ends with the reply on screen, if any
    candidates: list[Candidate] = field(default_factory=list)  # every candidate for the last user turn
    shown: int = -1  # index of the candidate on screen (the newest after a generation)
    written: set[str] = field(default_factory=set)  # ids of pairs already in the preferences file
    dialog_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def context(self) -> list[Turn]:
        return self.turns[:-1] if self.turns and self.turns[-1].role == "assistant" else list(self.turns)


def chat_messages(state: WebState) -> list[dict[str, str]]:
    """What the Chatbot shows: plain replies (tags live in the side panel)."""
    return [{"role": t.role, "content": t.text} for t in state.turns if t.role in ("user", "assistant")]


def candidate_status(state: WebState) -> str:
    """``Candidate k of n`` for the reply on screen."""
    return f"Candidate {state.shown + 1} of {len(state.candidates)}"


def latent_markdown(state: Tags | None, action: Tags | None, note: str = "") -> str:
    out = f"**State read:** {format_tags(state)}\n\n**Action chosen:** {format_tags(action)}"
    return out + (f"\n\n_{note}_" if note else "")


def preference_pairs(state: WebState) -> list[PreferencePair]:
    """The reply on screen (chosen) against every other candidate for the same context (rejected)."""
    if not state.candidates or not state.turns or state.turns[-1].role != "assistant":
        return []
    chosen = state.turns[-1]
    shown = state.shown if 0 <= state.shown < len(state.candidates) else len(state.candidates) - 1
    history = state.context()
    seed = next((t.text for t in history if t.role == "user"), "")
    pairs = []
    for i, c in enumerate(state.candidates):
        rejected = c.turn()
        if i == shown or rejected == chosen:
            continue
        pairs.append(
            PreferencePair(
                id=f"{state.dialog_id}-t{len(history)}-c{shown}-r{i}",
                history=history,
                chosen=chosen,
                rejected=rejected,
                seed=seed,
                depth=sum(1 for t in history if t.role == "assistant"),
                tag_diff=sac.tag_diff(chosen.action, rejected.action) + [
                    f"state.{k}" for k in sac.tag_diff(chosen.state, rejected.state)
                ],
                source="webui",
            )
        )
    return pairs


class WebApp:
    """The UI's logic, separate from the Gradio layout so it can be driven from Python too."""

    def __init__(
        self,
        backend: Backend,
        prefs_path: str | Path,
        *,
        system_prompt: str | None = None,
        sampling: SamplingParams | None = None,
    ):
        self.backend = backend
        self.prefs_path = Path(prefs_path)
        self.system_prompt = system_prompt
        self.sampling = sampling or CHAT_SAMPLING.params()
        self._write_lock = threading.Lock()  # sessions share the preferences file
        self._gens = 0

    def _sampling(self) -> SamplingParams:
        self._gens += 1
        s = self.sampling
        return s if s.seed is None else replace(s, seed=s.seed + self._gens)

    async def generate(self, state: WebState, panel: dict[str, str]) -> AsyncIterator[tuple[WebState, str]]:
        """Generate a reply for the last user turn (replacing the shown one), streaming updates."""
        steering = parse_steering({k: v for k, v in panel.items() if v and v.strip()}, what="latent panel")
        msgs = history_messages(state.context(), self.system_prompt)
        if state.turns and state.turns[-1].role == "assistant":
            state.turns.pop()
        state.turns.append(Turn(role="assistant", text=""))
        latent = latent_markdown(None, None, "generating…")
        async for ev in stream_turn(self.backend, msgs, steering=steering, sampling=self._sampling()):
            if ev.kind == "latent":
                latent = latent_markdown(ev.state, ev.action, "generating…")
            elif ev.kind == "text":
                state.turns[-1] = Turn(role="assistant", text=state.turns[-1].text + ev.text)
            elif ev.kind == "done" and ev.candidate is not None:
                state.turns[-1] = ev.candidate.turn()
                state.candidates.append(ev.candidate)
                state.shown = len(state.candidates) - 1
                forced = steering.as_dict()
                note = "steered: " + ", ".join(f"{k}={v}" for k, v in forced.items()) if forced else ""
                latent = latent_markdown(ev.state, ev.action, note)
            yield state, latent

    def select(self, state: WebState, step: int) -> tuple[WebState, str, str]:
        """Show the candidate ``step`` places before (-1) or after (+1) the one on screen.

        Returns the state, the latent panel text and a status line ("Candidate k of n")."""
        if not state.candidates or not state.turns or state.turns[-1].role != "assistant":
            return state, latent_markdown(None, None), "No candidates yet."
        shown = state.shown if 0 <= state.shown < len(state.candidates) else len(state.candidates) - 1
        state.shown = min(max(shown + step, 0), len(state.candidates) - 1)
        cand = state.candidates[state.shown]
        state.turns[-1] = cand.turn()
        note = "steered: " + ", ".join(f"{k}={v}" for k, v in cand.forced.items()) if cand.forced else ""
        return state, latent_markdown(cand.state, cand.action, note), candidate_status(state)

    def keep(self, state: WebState) -> tuple[WebState, str]:
        """Append the chosen-vs-discarded pairs of the last reply to the preferences file."""
        pairs = preference_pairs(state)
        if not pairs:
            return state, "Nothing to keep yet: regenerate at least once so there is a reply to prefer it over."
        new = [p for p in pairs if p.id not in state.written]
        with self._write_lock, JsonlJournal(self.prefs_path) as journal:
            for p in new:
                journal.append(p)  # whole lines, flushed: a crash never leaves half a record
        state.written.update(p.id for p in new)
        return state, f"Kept this reply: wrote {len(new)} preference pair(s) to {self.prefs_path}"


def _panel(values: list[str]) -> dict[str, str]:
    return dict(zip(FIELDS, values, strict=True))


def _tag_value(tags: Tags | None, attr: str) -> str:
    if tags is None:
        return ""
    v = getattr(tags, attr)
    if v is None:
        return ""
    return ", ".join(v) if isinstance(v, list) else str(v)


def build_ui(app: WebApp) -> Any:
    """The Gradio Blocks layout wired to ``app``."""
    import gradio as gr

    with gr.Blocks(title="sage-dialog", analytics_enabled=False) as demo:
        st = gr.State(WebState())
        gr.Markdown(f"### sage-dialog · {app.backend.name}")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    elem_id="chatbot", label="Dialog", render_markdown=False, feedback_options=None, height=420
                )
                msg = gr.Textbox(elem_id="msg", label="Message", placeholder="Type a message and press Enter")
                with gr.Row():
                    send = gr.Button("Send", elem_id="send", variant="primary")
                    regen = gr.Button("Regenerate", elem_id="regen")
                    prev = gr.Button("◀", elem_id="cand-prev", min_width=40)
                    nxt = gr.Button("▶", elem_id="cand-next", min_width=40)
                    keep = gr.Button("Keep this one", elem_id="keep")
                    clear = gr.Button("Clear", elem_id="clear")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=1):
                gr.Markdown("#### Latent (empty = the model chooses)")
                boxes = [gr.Textbox(label=k, elem_id=k, max_lines=1) for k in FIELDS]
                edit = gr.Button("Edit last latent", elem_id="edit-latent", size="sm")
                latent = gr.Markdown(latent_markdown(None, None), elem_id="latent")

        async def on_send(text: str, state: WebState, *values: str) -> AsyncIterator[tuple[Any, ...]]:
            text = (text or "").strip()
            if not text:
                yield chat_messages(state), gr.update(), state, "Type a message first.", gr.update()
                return
            state.turns.append(Turn(role="user", text=text))
            state.candidates, state.shown = [], -1
            try:
                async for _s, lat in app.generate(state, _panel(list(values))):
                    yield chat_messages(state), lat, state, "", ""
            except Exception as e:  # one readable line in the UI; the session stays usable
                yield chat_messages(state), gr.update(), state, f"Error: {e}", ""

        async def on_regen(state: WebState, *values: str) -> AsyncIterator[tuple[Any, ...]]:
            if not state.turns or state.turns[-1].role != "assistant":
                yield chat_messages(state), gr.update(), state, "Send a message first."
                return
            try:
                async for _s, lat in app.generate(state, _panel(list(values))):
                    yield chat_messages(state), lat, state, f"Candidate {len(state.candidates) + 1} …"
                yield chat_messages(state), lat, state, candidate_status(state)
            except Exception as e:
                yield chat_messages(state), gr.update(), state, f"Error: {e}"

        def on_step(step: int) -> Any:
            def handler(state: WebState) -> tuple[Any, ...]:
                state, lat, note = app.select(state, step)
                return chat_messages(state), lat, state, note

            return handler

        def on_keep(state: WebState) -> tuple[Any, ...]:
            state, note = app.keep(state)
            return state, note

        def on_clear() -> tuple[Any, ...]:
            return [], latent_markdown(None, None), WebState(), "", *[""] * len(FIELDS)

        def on_edit(state: WebState) -> list[str]:
            last = state.turns[-1] if state.turns and state.turns[-1].role == "assistant" else None
            vals = []
            for k in FIELDS:
                kind, attr = STEER_KEYS[k]
                vals.append(_tag_value((last.state if kind == "state" else last.action) if last else None, attr))
            return vals

        send_inputs = [msg, st, *boxes]
        send.click(on_send, send_inputs, [chatbot, latent, st, status, msg])
        msg.submit(on_send, send_inputs, [chatbot, latent, st, status, msg])
        regen.click(on_regen, [st, *boxes], [chatbot, latent, st, status])
        prev.click(on_step(-1), [st], [chatbot, latent, st, status])
        nxt.click(on_step(+1), [st], [chatbot, latent, st, status])
        keep.click(on_keep, [st], [st, status])
        clear.click(on_clear, None, [chatbot, latent, st, status, *boxes])
        edit.click(on_edit, [st], boxes)
    return demo


def launch(app: WebApp, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Start the UI on ``host:port`` with everything that would reach the network turned off."""
    import gradio as gr

    demo = build_ui(app)
    # system fonts: the default theme would fetch Google Fonts from the browser
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        ssr_mode=False,
        mcp_server=False,
        prevent_thread_lock=not block,
        quiet=True,
        theme=theme,
        footer_links=[],
    )
    return demo
