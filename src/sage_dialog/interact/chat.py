"""Terminal chat with a SAC model: streaming replies, the latent shown per turn, steering commands.

Each assistant turn prints the state the model read in your message and the action it chose,
formatted (``motivation comfort · emotion gentle · topics exam``), then streams the reply. Commands:

``/steer KEY=VALUE ...``  force fields of the next turn (``a_emotion=playful a_motivation=joke``;
                          ``u_*`` force the state; ``/steer`` alone shows, ``/steer off`` clears)
``/regen``                regenerate the last reply (with the pending steering, if any)
``/alts N``               show N alternative replies to your last message; ``/pick K`` keeps one
``/save FILE``            save the dialog: ``.jsonl`` -> a schema.Dialog record, ``.txt`` -> the
                          original SAGE transcript format
``/clear``                start over; ``/help``; ``/quit``
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from sage_dialog.backends.base import Backend, Message, SamplingParams
from sage_dialog.core import io as sio
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.roles.assistant import Candidate, format_tags, generate_turns, stream_turn
from sage_dialog.roles.rollout import history_messages
from sage_dialog.roles.sampling import CHAT_SAMPLING
from sage_dialog.roles.steering import Steering, parse_steering

HELP = """commands:
  /steer KEY=VALUE ...   force the next turn (keys: u_motivation u_emotion u_topic a_motivation a_emotion a_topic)
  /steer                 show the pending steering      /steer off   clear it
  /regen                 regenerate the last reply
  /alts N                show N alternative replies     /pick K      keep alternative K
  /save FILE             save the dialog (.jsonl: Dialog record; .txt: SAGE transcript)
  /clear                 start a new dialog
  /help                  this help                      /quit        leave"""


class ChatSession:
    """A dialog in progress with one backend: the turns so far and the steering for the next turn.

    The terminal loop (:func:`repl`) and the web UI drive it; it is usable on its own from Python.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        system_prompt: str | None = None,
        sampling: SamplingParams | None = None,
        stream: bool = True,
    ):
        self.backend = backend
        self.system_prompt = system_prompt
        self.sampling = sampling or CHAT_SAMPLING.params()
        self.stream = stream
        self.turns: list[Turn] = []
        self.steering = Steering()  # applies to the next generated turn, then resets
        self.last_steering = Steering()  # what the last reply was generated with
        self.alternatives: list[Candidate] = []
        self.dialog_id = uuid.uuid4().hex[:12]
        self._gen_count = 0

    # -- state ---------------------------------------------------------------------------------

    def clear(self) -> None:
        self.turns.clear()
        self.alternatives.clear()
        self.steering = Steering()
        self.dialog_id = uuid.uuid4().hex[:12]

    def context(self) -> list[Message]:
        """Messages up to and including the last user turn (the last reply excluded)."""
        turns = self.turns[:-1] if self.turns and self.turns[-1].role == "assistant" else self.turns
        return history_messages(turns, self.system_prompt)

    def _sampling(self) -> SamplingParams:
        # vary the seed per generation so /regen gives a different reply when a seed is set
        self._gen_count += 1
        s = self.sampling
        return s if s.seed is None else replace(s, seed=s.seed + self._gen_count)

    def _take_steering(self) -> Steering:
        st, self.steering = self.steering, Steering()
        self.last_steering = st
        return st

    # -- generation ----------------------------------------------------------------------------

    async def _reply(self, on_event: Callable[[str, object], None] | None) -> Candidate:
        msgs = self.context()
        steering = self._take_steering()
        if self.stream:
            cand: Candidate | None = None
            async for ev in stream_turn(self.backend, msgs, steering=steering, sampling=self._sampling()):
                if ev.kind == "latent" and on_event:
                    on_event("latent", (ev.state, ev.action))
                elif ev.kind == "text" and on_event:
                    on_event("text", ev.text)
                elif ev.kind == "done":
                    cand = ev.candidate
            assert cand is not None
        else:
            cand = (await generate_turns(self.backend, msgs, steering=steering, sampling=self._sampling()))[0]
            if on_event:
                on_event("latent", (cand.state, cand.action))
                on_event("text", cand.reply)
        if cand.stray and on_event:
            on_event("stray", cand.stray)
        if self.turns and self.turns[-1].role == "assistant":
            self.turns[-1] = cand.turn()
        else:
            self.turns.append(cand.turn())
        return cand

    async def send(self, text: str, on_event: Callable[[str, object], None] | None = None) -> Candidate:
        """Add a user message and generate the reply (streamed to ``on_event`` as it comes)."""
        self.turns.append(Turn(role="user", text=text))
        self.alternatives = []
        return await self._reply(on_event)

    async def regen(self, on_event: Callable[[str, object], None] | None = None) -> Candidate:
        """Replace the last reply with a new one (the pending steering applies)."""
        if not self.turns or self.turns[-1].role != "assistant":
            raise UserError("nothing to regenerate yet: send a message first")
        if self.steering.is_empty:
            self.steering = self.last_steering  # keep steering the reply the way it was steered
        return await self._reply(on_event)

    async def alts(self, n: int) -> list[Candidate]:
        """``n`` alternative replies to the last user message (the current reply is kept until /pick)."""
        if not any(t.role == "user" for t in self.turns):
            raise UserError("no message to answer yet: send a message first")
        steering = self.steering if not self.steering.is_empty else self.last_steering
        self.alternatives = await generate_turns(
            self.backend, self.context(), steering=steering, n=n, sampling=self._sampling()
        )
        return self.alternatives

    def pick(self, k: int) -> Candidate:
        """Replace the last reply with alternative ``k`` (1-based)."""
        if not 1 <= k <= len(self.alternatives):
            raise UserError(f"no alternative {k}: there are {len(self.alternatives)} (use /alts N first)")
        cand = self.alternatives[k - 1]
        if self.turns and self.turns[-1].role == "assistant":
            self.turns[-1] = cand.turn()
        else:
            self.turns.append(cand.turn())
        return cand

    # -- saving --------------------------------------------------------------------------------

    def dialog(self) -> Dialog:
        meta: dict[str, object] = {"source": "chat", "model": self.backend.name}
        if self.system_prompt:
            meta["system_prompt"] = self.system_prompt
        return Dialog(id=self.dialog_id, turns=list(self.turns), meta=meta)

    def save(self, path: str | Path) -> Path:
        """Write the dialog: ``.txt`` -> SAGE transcript, anything else -> one Dialog JSONL record."""
        p = Path(path)
        if not self.turns:
            raise UserError("nothing to save yet: send a message first")
        if p.suffix == ".txt":
            with sio.atomic_write(p) as fh:
                fh.write(transcript_text(self.dialog()))
        else:
            sio.write_jsonl(p, [self.dialog()])
        return p


def transcript_text(dialog: Dialog) -> str:
    """The dialog in the original SAGE transcript format (formats.transcripts when available)."""
    import importlib

    try:
        transcripts = importlib.import_module("sage_dialog.formats.transcripts")  # when present
        writer = getattr(transcripts, "dialog_to_transcript", None) or getattr(transcripts, "render_transcript", None)
        if writer is not None:
            return str(writer(dialog))
    except ImportError:
        pass
    from sage_dialog.core import sac

    lines = []
    for t in dialog.turns:
        if t.role == "user":
            lines.append(f"🧑‍💻: {t.text}")
        elif t.role == "assistant":
            blocks = []
            if t.state is not None:
                blocks.append(_long_keys(sac.render_block(t.state, "state"), "u_", "user_"))
            if t.action is not None:
                blocks.append(_long_keys(sac.render_block(t.action, "action"), "a_", "assistant_"))
            lines.append("🤖: " + " ".join([*blocks, t.text]))
    return "\n".join(lines) + "\n"


def _long_keys(block: str, short: str, long: str) -> str:
    # the original scripts spelled keys user_motivation / assistant_motivation (FORMATS.md section 3)
    for f in ("motivation", "emotion", "topic"):
        block = block.replace(f"{short}{f}:", f"{long}{f}:")
    return block


# ---------------------------------------------------------------------------------------------
# the terminal loop


def _print_latent(out: TextIO, state: object, action: object) -> None:
    out.write(f"  · state read  : {format_tags(state)}\n")  # type: ignore[arg-type]
    out.write(f"  · action      : {format_tags(action)}\n")  # type: ignore[arg-type]
    out.flush()


def _run_turn(loop: asyncio.AbstractEventLoop, coro_fn: Callable[..., object], out: TextIO) -> None:
    started = False
    stray: list[str] = []

    def on_event(kind: str, payload: object) -> None:
        nonlocal started
        if kind == "stray":
            stray.append(str(payload))
        elif kind == "latent":
            latent: tuple[object, object] = payload  # type: ignore[assignment]
            _print_latent(out, *latent)
        elif kind == "text":
            if not started:
                out.write("bot> ")
                started = True
            out.write(str(payload))
            out.flush()

    loop.run_until_complete(coro_fn(on_event))  # type: ignore[arg-type]
    if not started:
        out.write("bot> ")
    out.write("\n")
    for s in stray:  # tag-like text that is neither a readable tag block nor the reply
        out.write(f"  · stray tag text (not part of the reply): {s}\n")
    out.flush()


def repl(session: ChatSession, *, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    """Read lines, run commands, stream replies; returns 0 on /quit or end of input."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    loop = asyncio.new_event_loop()
    out.write(f"sage-dialog chat with {session.backend.name} (/help for commands)\n")
    try:
        while True:
            out.write("you> ")
            out.flush()
            line = stdin.readline()
            if not line:
                out.write("\n")
                return 0
            line = line.strip()
            if not line:
                continue
            saved = list(session.turns)
            try:
                if line.startswith("/"):
                    if _command(session, loop, line, out) == "quit":
                        return 0
                else:
                    _run_turn(loop, lambda cb, text=line: session.send(text, cb), out)
            except UserError as e:
                for p in e.problems:
                    out.write(f"error: {p}\n")
            except KeyboardInterrupt:
                # Ctrl-C while generating: drop that turn and go back to the prompt
                _cancel_pending(loop)
                session.turns = saved
                out.write("\n(interrupted; Ctrl-D or /quit leaves)\n")
    finally:
        loop.run_until_complete(session.backend.aclose())
        loop.close()


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _command(session: ChatSession, loop: asyncio.AbstractEventLoop, line: str, out: TextIO) -> str | None:
    try:
        parts = shlex.split(line)
    except ValueError as e:
        raise UserError(f"cannot read command: {e}") from None
    cmd, args = parts[0].lower(), parts[1:]
    if cmd in ("/quit", "/exit", "/q"):
        return "quit"
    if cmd == "/help":
        out.write(HELP + "\n")
    elif cmd == "/clear":
        session.clear()
        out.write("(new dialog)\n")
    elif cmd == "/steer":
        if args and args[0] in ("off", "clear", "none"):
            session.steering = Steering()
            out.write("(steering cleared)\n")
        elif args:
            session.steering = parse_steering(args, what="/steer")
            forced = session.steering.as_dict()
            out.write("(next turn steered: " + ", ".join(f"{k}={v}" for k, v in forced.items()) + ")\n")
        else:
            forced = session.steering.as_dict()
            out.write("(steering: " + (", ".join(f"{k}={v}" for k, v in forced.items()) or "none") + ")\n")
    elif cmd == "/regen":
        _run_turn(loop, session.regen, out)
    elif cmd == "/alts":
        try:
            n = int(args[0]) if args else 3
        except ValueError:
            raise UserError(f"/alts: {args[0]!r} is not a number") from None
        if not 1 <= n <= 16:
            raise UserError("/alts: N must be between 1 and 16")
        for i, c in enumerate(loop.run_until_complete(session.alts(n)), 1):
            out.write(f"[{i}] {c.reply}\n")
            _print_latent(out, c.state, c.action)
        out.write("(/pick K keeps alternative K)\n")
    elif cmd == "/pick":
        if not args or not args[0].isdigit():
            raise UserError("/pick: give the number of an alternative, e.g. /pick 2")
        c = session.pick(int(args[0]))
        out.write(f"(kept alternative {args[0]})\n")
        _print_latent(out, c.state, c.action)
        out.write(f"bot> {c.reply}\n")
    elif cmd == "/save":
        if not args:
            raise UserError("/save: give a file name, e.g. /save dialog.jsonl or /save dialog.txt")
        p = session.save(args[0])
        out.write(f"(saved {len(session.turns)} turns to {p})\n")
    else:
        raise UserError(f"unknown command {cmd} (/help lists them)")
    out.flush()
    return None
