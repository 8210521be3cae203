"""`sage-dialog serve` under hostile load: a real server process on loopback, the tiny model, small limits.

Greedy decoding makes the random tiny model loop without ever writing an end-of-turn token, so
``temperature=0, n=16, max_tokens=4000`` is a request that runs for tens of seconds unless something
stops it. Every request here is bounded in time; the server is stopped by SIGTERM in the last test.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import APIError, BadRequestError, OpenAI

from tests.support import ServedProcess, start_process

pytestmark = pytest.mark.slow  # starts a server process with a model (~20 s on a busy 2-core box)

LONG = {"temperature": 0, "n": 16, "max_tokens": 4000}  # runs for tens of seconds if nothing stops it
USER = [{"role": "user", "content": "hello there"}]
# every tag forced: the prefill is complete, so a quick request is one short generate call
FULL_STEER = {
    k: "x" for k in ("u_motivation", "u_emotion", "u_topic", "a_motivation", "a_emotion", "a_topic")
}
REQUEST_TIMEOUT = 4
SHUTDOWN_TIMEOUT = 2


class Served:
    def __init__(self, served: ServedProcess):
        self.base, self.proc = served.base, served.proc
        self.log = served.log  # the server's output lines, filled as they come

    def client(self, timeout: float = 60) -> OpenAI:
        return OpenAI(base_url=f"{self.base}/v1", api_key="unused", max_retries=0, timeout=timeout)

    def quick_answer_s(self) -> float:
        """Seconds a short request takes: long if an abandoned generation still holds the model."""
        t = time.monotonic()
        self.client().chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=2,
            extra_body={"sage_steer": FULL_STEER},  # type: ignore[arg-type]
        )
        return time.monotonic() - t


@pytest.fixture(scope="module")
def served(tiny_model: Path) -> Iterator[Served]:
    args = [
        "serve",
        "--model",
        f"hf:{tiny_model}",
        "--served-name",
        "tiny",
        "--max-tokens",
        "8",
        "--max-request-bytes",
        "20000",
        "--max-prompt-tokens",
        "300",
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT),
    ]
    with start_process(args, env={"HF_HUB_OFFLINE": "1"}) as s:
        yield Served(s)


def test_oversized_body_and_prompt_are_refused_fast(served: Served) -> None:
    client = served.client()
    t = time.monotonic()
    with pytest.raises(APIError) as e:  # ~1 MB message: 413 before the body is read
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 200_000}]
        )
    assert getattr(e.value, "status_code", None) == 413 and "--max-request-bytes" in str(e.value)
    with pytest.raises(BadRequestError, match="--max-prompt-tokens"):  # small in bytes, too many tokens
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 2000}])
    assert time.monotonic() - t < 10
    assert served.quick_answer_s() < 10


def test_request_timeout_stops_the_generation(served: Served) -> None:
    t = time.monotonic()
    with pytest.raises(APIError) as e:
        served.client().chat.completions.create(model="tiny", messages=USER, **LONG)  # type: ignore[arg-type]
    assert getattr(e.value, "status_code", None) == 504 and "--request-timeout" in str(e.value)
    assert time.monotonic() - t < REQUEST_TIMEOUT + 5
    assert served.quick_answer_s() < 10  # the abandoned rows stopped; nothing holds the model


def test_streamed_request_timeout_ends_with_an_error_event(served: Served) -> None:
    stream = served.client().chat.completions.create(
        model="tiny", messages=USER, stream=True, temperature=0, max_tokens=4000
    )
    t = time.monotonic()
    with pytest.raises(APIError, match="--request-timeout"):
        for _ in stream:
            pass
    assert time.monotonic() - t < REQUEST_TIMEOUT + 5
    assert served.quick_answer_s() < 10


def test_client_disconnect_cancels_the_generation(served: Served) -> None:
    with pytest.raises(httpx.TimeoutException):  # the client gives up after 1 s and closes the connection
        httpx.post(
            f"{served.base}/v1/chat/completions", json={"model": "tiny", "messages": USER, **LONG}, timeout=1
        )
    assert served.quick_answer_s() < 10
    deadline = time.time() + 10
    while not any("client disconnected" in line for line in served.log):
        assert time.time() < deadline, "".join(served.log[-20:])
        time.sleep(0.2)


def test_first_sigterm_stops_a_busy_server(served: Served) -> None:
    errors: list[BaseException] = []

    def busy() -> None:
        try:
            served.client(timeout=60).chat.completions.create(model="tiny", messages=USER, **LONG)  # type: ignore[arg-type]
        except BaseException as e:  # the server goes away under it: expected
            errors.append(e)

    th = threading.Thread(target=busy, daemon=True)
    th.start()
    time.sleep(1.0)  # the long request is running
    t = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    rc = served.proc.wait(timeout=SHUTDOWN_TIMEOUT + 20)
    took = time.monotonic() - t
    assert rc in (0, -signal.SIGTERM), "".join(served.log[-20:])  # uvicorn re-raises the signal once done
    assert any("Finished server process" in line for line in served.log)
    assert took < SHUTDOWN_TIMEOUT + 15
    th.join(timeout=10)
    assert not any("Traceback" in line for line in served.log), "".join(served.log)
