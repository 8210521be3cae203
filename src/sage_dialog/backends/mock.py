"""The ``mock:`` provider: a real backend with scripted answers, for offline runs and tests.

It implements the whole protocol of :mod:`backends.base` (``generate``, ``score``, ``stream``; lists
in, lists out, token usage counted) without a model, so any command runs offline::

    sage-dialog annotate dialogs.jsonl -o ann.jsonl --annotator mock:answers.yaml

Where the answers come from, first match wins:

1. ``fn`` (Python only): ``fn(request, sample_index) -> str | Completion``, for tests that compute
   the answer from the prompt;
2. ``rules``: ``[{match: REGEX, output: TEXT}, ...]``; the first rule whose regex is found in the
   request's text (all messages and the prefill) answers it;
3. ``outputs``: a list of texts handed out in turn, cycling (a counter over all samples of all
   calls, so a batch gets consecutive entries); default ``["mock output"]``.

Scores: ``score_fn(request) -> list[float]`` (Python), else ``scores`` (a list of log-probability
lists, cycled, each as long as the request's options), else every option equally likely.
``scoring: false`` makes it a backend that cannot score (:class:`ScoringUnsupported`), like a
server without logprobs; ``streaming: true`` streams word by word, ``stream_chunk: N`` N characters
at a time (default: the protocol's generate-then-yield-once).

The spec is ``mock:`` (defaults) or ``mock:FILE``: a JSON or YAML file holding either a list of
outputs or a mapping with the keys above (``outputs``, ``rules``, ``scores``, ``scoring``,
``streaming``, ``stream_chunk``). The same keys are accepted as backend options (``--backend-option`` / ``options:``).

Every answered request is recorded in :attr:`MockBackend.history` (in order) and every answered
call in :attr:`MockBackend.calls` (``("generate" | "score", batch size)``; :meth:`batches`). Tokens are counted as
whitespace-separated words. Like a model, an answer is cut at the first stop string
(``finish_reason`` "stop") and after ``max_tokens`` words ("length").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from sage_dialog.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    ChatStream,
    Completion,
    ScoreRequest,
    ScoreResult,
    ScoringUnsupported,
)
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import loads_json

GenerateFn = Callable[[ChatRequest, int], "str | Completion"]
ScoreFn = Callable[[ScoreRequest], Sequence[float]]

DEFAULT_OUTPUT = "mock output"
_KEYS = {"outputs", "rules", "scores", "scoring", "streaming", "stream_chunk"}


def _words(text: str) -> int:
    return len(text.split())


def load_script(path: str | Path) -> dict[str, Any]:
    """Read a mock script file (JSON or YAML): a list of outputs or a mapping of the module's keys."""
    from sage_dialog.core.limits import read_bounded
    from sage_dialog.core.yamlsafe import load_yaml

    p = Path(path)
    try:
        text = read_bounded(p, what="mock script").decode("utf-8")
    except UserError as e:
        raise UserError(f"backend mock:{e.problems[0]}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"backend mock:{path}: cannot read it ({e})") from None
    if p.suffix == ".json":  # the project's one JSON reader (depth, huge integers, NaN, BOM)
        data = loads_json(text, f"backend mock:{path}")
    else:  # the project's one YAML reader (nesting, alias bombs)
        data = load_yaml(text, f"backend mock:{path}")
    if isinstance(data, list):
        return {"outputs": data}
    if not isinstance(data, dict):
        raise UserError(f"backend mock:{path}: expected a list of outputs or a mapping, got {type(data).__name__}")
    unknown = set(data) - _KEYS
    if unknown:
        raise UserError(f"backend mock:{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(_KEYS))}")
    return data


class MockBackend(Backend):
    """Scripted backend (see the module docstring). ``model`` is "" or a script file."""

    provider = "mock"

    def __init__(
        self,
        model: str = "",
        *,
        outputs: Sequence[str] | None = None,
        rules: Sequence[dict[str, str]] | None = None,
        scores: Sequence[Sequence[float]] | None = None,
        fn: GenerateFn | None = None,
        score_fn: ScoreFn | None = None,
        scoring: bool | None = None,
        streaming: bool | None = None,
        stream_chunk: int | None = None,
        label: str | None = None,
        **options: Any,
    ):
        # ``label`` names a scripted-in-Python mock (mock:LABEL) without reading a file
        super().__init__(label or model, **options)
        script = load_script(model) if model and label is None else {}
        outputs = list(outputs if outputs is not None else script.get("outputs", [DEFAULT_OUTPUT]))
        if not outputs or not all(isinstance(o, str) for o in outputs):
            raise UserError(f"backend {self.name}: 'outputs' must be a non-empty list of texts")
        self.outputs: list[str] = outputs
        self.rules: list[tuple[re.Pattern[str], str]] = []
        for i, rule in enumerate(rules if rules is not None else script.get("rules", [])):
            if not isinstance(rule, dict) or set(rule) != {"match", "output"}:
                raise UserError(f"backend {self.name}: rule {i + 1} must be {{match: REGEX, output: TEXT}}")
            try:
                self.rules.append((re.compile(rule["match"]), str(rule["output"])))
            except re.error as e:
                raise UserError(f"backend {self.name}: rule {i + 1}: bad regex {rule['match']!r} ({e})") from None
        self.scores = [list(map(float, s)) for s in (scores if scores is not None else script.get("scores", []))]
        self.fn = fn
        self.score_fn = score_fn
        self.scoring = bool(script.get("scoring", True) if scoring is None else scoring)
        self.streaming = bool(script.get("streaming", False) if streaming is None else streaming)
        self.stream_chunk = stream_chunk or script.get("stream_chunk")  # characters per piece; None: words
        if self.stream_chunk is not None:
            self.streaming = True
        self.history: list[ChatRequest | ScoreRequest] = []
        self.calls: list[tuple[str, int]] = []
        self._next = 0  # position in ``outputs``
        self._next_score = 0

    # -- what the tests look at ------------------------------------------------------------------

    @property
    def chat_requests(self) -> list[ChatRequest]:
        return [r for r in self.history if isinstance(r, ChatRequest)]

    @property
    def score_requests(self) -> list[ScoreRequest]:
        return [r for r in self.history if isinstance(r, ScoreRequest)]

    def batches(self, kind: str = "generate") -> list[int]:
        """Batch sizes of the answered ``generate`` (or ``score``) calls, in order."""
        return [n for k, n in self.calls if k == kind]

    def prompts(self) -> list[str]:
        """The last message of every recorded request, in order."""
        return [r.messages[-1]["content"] if r.messages else "" for r in self.history]

    def identity(self) -> dict[str, Any]:
        # the script decides the outputs, so it is part of a cache key
        script = {"outputs": self.outputs, "rules": [(p.pattern, o) for p, o in self.rules], "scores": self.scores,
                  "fn": getattr(self.fn, "__qualname__", None), "score_fn": getattr(self.score_fn, "__qualname__", None)}
        digest = hashlib.sha256(json.dumps(script, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return {**super().identity(), "script": digest}

    # -- the protocol ----------------------------------------------------------------------------

    def _answer(self, request: ChatRequest, index: int) -> Completion:
        if self.fn is not None:
            out = self.fn(request, index)
            comp = out if isinstance(out, Completion) else Completion(text=str(out))
        else:
            text = None
            if self.rules:
                seen = "\n".join([m["content"] for m in request.messages] + [request.prefill or ""])
                text = next((o for p, o in self.rules if p.search(seen)), None)
            if text is None:
                text = self.outputs[self._next % len(self.outputs)]
                self._next += 1
            comp = Completion(text=text)
        return self._limit(comp, request)

    @staticmethod
    def _limit(comp: Completion, request: ChatRequest) -> Completion:
        """Cut at the first stop string, then at ``max_tokens`` words, as a model would stop."""
        text, reason = comp.text, comp.finish_reason
        cut = min((i for i in (text.find(s) for s in request.sampling.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        words = re.findall(r"\s*\S+", text)
        if len(words) > request.sampling.max_tokens:
            text, reason = "".join(words[: request.sampling.max_tokens]), "length"
        return Completion(text=text, finish_reason=reason, tokens_out=comp.tokens_out or _words(text),
                          error=comp.error)

    @staticmethod
    def _tokens_in(messages: Sequence[dict[str, str]], prefill: str | None) -> int:
        return sum(_words(m.get("content", "")) for m in messages) + _words(prefill or "")

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        out = []
        for r in requests:
            comps = [self._answer(r, r.sample_offset + j) for j in range(r.n)]
            out.append(ChatResult(completions=comps, tokens_in=self._tokens_in(r.messages, r.prefill)))
        # recorded once answered: a call whose ``fn`` raised (a simulated crash) asked nothing
        self.calls.append(("generate", len(requests)))
        self.history.extend(requests)
        return out

    @property
    def supports_scoring(self) -> bool:
        return self.scoring

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if not self.scoring:
            raise ScoringUnsupported(f"backend {self.name} cannot score options (scoring: false)")
        out = []
        for r in requests:
            if self.score_fn is not None:
                lps = [float(x) for x in self.score_fn(r)]
            elif self.scores:
                lps = self.scores[self._next_score % len(self.scores)]
                self._next_score += 1
            else:
                lps = [0.0] * len(r.options)
            if len(lps) != len(r.options):
                raise UserError(f"backend {self.name}: {len(lps)} scores for {len(r.options)} options")
            out.append(ScoreResult(logprobs=lps, tokens_in=self._tokens_in(r.messages, r.prefill)))
        self.calls.append(("score", len(requests)))
        self.history.extend(requests)
        return out

    @property
    def supports_streaming(self) -> bool:
        return self.streaming

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        if not self.streaming:
            async for piece in super()._stream(request, out):
                yield piece
            return
        [res] = await self.generate([request])
        comp = res.completions[0]
        out.completion, out.tokens_in = comp, res.tokens_in
        if self.stream_chunk:
            k = int(self.stream_chunk)
            pieces = [comp.text[i : i + k] for i in range(0, len(comp.text), k)]
        else:
            pieces = re.findall(r"\s*\S+|\s+$", comp.text)  # word by word, whitespace kept
        for piece in pieces:
            yield piece
