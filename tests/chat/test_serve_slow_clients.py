"""Slow clients against a real ``sage-dialog serve`` on 127.0.0.1, over raw sockets (issue 28).

A body trickling in at 2 bytes a time is cut at ``--request-timeout`` with a 408 and the connection
closed; connections that send their request headers a byte at a time are closed after
``--header-timeout`` (uvicorn alone never drops them: they are not idle). Every loop here is
bounded by a deadline, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support import start_process


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    args = ["serve", "--model", "mock:", "--request-timeout", "2", "--header-timeout", "1", "--log-level", "warning"]
    with start_process(args, ready=None, timeout_s=60, what="serve") as served:
        yield served.port
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done


def _closed_within(sock: socket.socket, seconds: float, feed: bytes) -> tuple[float | None, bytes]:
    """Send ``feed`` every 0.2 s until the server closes the connection; (seconds taken, bytes read),
    or (None, ...) when it was still open after ``seconds``."""
    sock.settimeout(0.2)
    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < seconds:
        try:
            sock.sendall(feed)
        except OSError:
            return time.monotonic() - t0, got
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0, got
        if not data:
            return time.monotonic() - t0, got
        got += data
    return None, got


def test_a_body_at_2_bytes_a_time_is_cut_at_the_request_timeout(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n")
        took, got = _closed_within(s, 20, b"{ ")
    assert took is not None, "the trickling body was still being read after 20 s"
    assert took < 2 + 10  # --request-timeout 2, slack for a loaded machine
    head = got.split(b"\r\n", 1)[0]
    assert head == b"HTTP/1.1 408 Request Timeout", got[:200]
    assert b"did not arrive within 2 s (server flag --request-timeout)" in got


def test_slow_header_connections_are_dropped(server: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", server)) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nX-Slow: ")
        t0 = time.monotonic()
        open_ = list(socks)
        while open_ and time.monotonic() - t0 < 20:
            for s in list(open_):
                took, _ = _closed_within(s, 0.2, b"a")
                if took is not None:
                    open_.remove(s)
        assert not open_, f"{len(open_)} of 20 slow-header connections still open after 20 s"
        assert time.monotonic() - t0 < 1 + 10
    finally:
        for s in socks:
            s.close()


def test_the_server_still_answers_after_the_slow_clients(server: int) -> None:
    body = b'{"model": "mock:", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}'
    with socket.create_connection(("127.0.0.1", server), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
