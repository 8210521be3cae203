"""Secrets never leave through error text: a server that echoes the API key, a token in a query.

The fault server here answers every request with an error whose body repeats the caller's key, as
careless servers do. Whatever the command (annotate's rejects, search / compare / steerability on
stderr, serve's log and error bodies), the key must not appear anywhere, and a backend failure is
exit 2 with one line, not a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from sage_dialog.cli import main
from sage_dialog.core import redact
from tests.support import free_port, start_process

KEY = "sk-test-S3CRET-9f8e7d6c5b4a3210"
TOKEN = "serve-t0ken-abcdef123456"


def _everything_under(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def test_redact_masks_configured_secrets_queries_and_bearers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-42-xyz")
    monkeypatch.setenv("PATH_LIKE", "not-a-secret")
    text = (f"HTTP 401: Incorrect API key provided: {KEY}; tok-42-xyz; GET /v1/models?api_key=abc123&x=1 "
            "Authorization: Bearer zzz-unregistered not-a-secret")
    out = redact.redact(text)
    assert KEY not in out and "tok-42-xyz" not in out and "abc123" not in out and "zzz-unregistered" not in out
    assert "not-a-secret" in out and "&x=1" in out and out.count(redact.MASK) == 4
    redact.add_secret("registered-secret-value")
    assert redact.redact("x registered-secret-value y") == f"x {redact.MASK} y"
    assert redact.redact_obj({"a": [KEY, 3]}) == {"a": [redact.MASK, 3]}


def test_redact_masks_the_user_info_of_urls() -> None:
    out = redact.redact("base_url http://user:pw-1234@10.0.0.1:8000/v1 and https://TOKEN5678@api.example.com/v1")
    assert "pw-1234" not in out and "TOKEN5678" not in out and "user:" not in out
    assert f"http://{redact.MASK}@10.0.0.1:8000/v1" in out and f"https://{redact.MASK}@api.example.com/v1" in out
    # an e-mail address or an @ after the host is no user-info
    assert redact.redact("mail a@b.c; GET http://host/v1?q=a@b") == "mail a@b.c; GET http://host/v1?q=a@b"


def _dialogs(path: Path) -> Path:
    d = {"kind": "dialog", "id": "d1", "turns": [{"role": "user", "text": "I failed my exam."},
                                                 {"role": "assistant", "text": "That is hard."}]}
    path.write_text(json.dumps(d) + "\n", encoding="utf-8")
    return path


def test_annotate_rejects_hold_no_key(fault_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    srv = fault_server(echo_key_status=401)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    raw = _dialogs(tmp_path / "raw.jsonl")
    out = tmp_path / "out" / "ann.jsonl"
    rc = main(["annotate", str(raw), "-o", str(out), "--annotator", "openai:m", "-q",
               "--backend-option", f"base_url={srv.base_url}", "--max-attempts", "1"])
    _, err = capsys.readouterr()
    assert f"Bearer {KEY}" in srv.auth_headers  # the server did get (and echo) the key
    rejects = (tmp_path / "out" / "ann.rejects.jsonl").read_text(encoding="utf-8")
    assert rc == 0 and redact.MASK in rejects  # the echoed body was there, masked
    assert KEY not in _everything_under(tmp_path) and KEY not in err


@pytest.mark.parametrize("command", ["search", "compare", "steerability"])
def test_backend_failure_is_exit_2_without_key(command: str, fault_server, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    srv = fault_server(echo_key_status=401)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("I failed my exam.\n", encoding="utf-8")
    argv = {
        "search": ["search", str(seeds), "-o", str(tmp_path / "s"), "--assistant", "openai:m", "--turns", "1",
                   "--candidates", "2", "--no-progress"],
        "compare": ["compare", "--model", "a=openai:m", "--model", "b=openai:m", "--seeds", str(seeds),
                    "--user", "openai:m", "--judge", "openai:m", "--turns", "1", "-o", str(tmp_path / "c"),
                    "--no-progress"],
        "steerability": ["steerability", "--contexts", str(seeds), "--model", "openai:m", "--judge", "openai:m",
                         "--action", "a_motivation=comfort", "-o", str(tmp_path / "st.json")],
    }[command]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert srv.counts["ok"] == 0 and f"Bearer {KEY}" in srv.auth_headers
    assert rc == 2, err
    assert "Traceback" not in err and "error: model backend failed (auth" in err, err
    assert redact.MASK in err and KEY not in err + out
    assert KEY not in _everything_under(tmp_path)


def test_connection_refused_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # closed again: nothing listens there
    raw = _dialogs(tmp_path / "raw.jsonl")
    rc = main(["annotate", str(raw), "-o", str(tmp_path / "a.jsonl"), "--annotator", "openai:m", "-q",
               "--backend-option", f"base_url=http://127.0.0.1:{port}/v1", "--backend-option", "max_retries=0",
               "--max-attempts", "1"])
    _, err = capsys.readouterr()
    # annotate counts a failed dialog as a typed reject (connection) instead of dying
    assert rc == 0 and "Traceback" not in err
    rej = [json.loads(x) for x in (tmp_path / "a.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rej) == 1 and "connection" in rej[0]["reason"]


@pytest.mark.slow
def test_serve_log_and_error_bodies_hold_no_secret(fault_server, tmp_path: Path) -> None:
    """A real `serve` in front of a backend whose server echoes the key; a client sends ?api_key=TOKEN."""
    srv = fault_server(echo_key_status=401)
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": srv.base_url, "SAGE_DIALOG_SERVE_TOKEN": TOKEN}
    with start_process(["serve", "--model", "openai:m"], env=env, timeout_s=60, what="serve") as served:
        base = served.base
        body = {"model": "openai:m", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=30)
        assert r.status_code >= 400 and KEY not in r.text and TOKEN not in r.text
        assert redact.MASK in r.text  # the echoed key was in the error, masked
        r = httpx.get(f"{base}/v1/models?api_key={TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 200
    log = served.output()
    assert "/v1/models?api_key=" in log  # the request was logged...
    assert TOKEN not in log and KEY not in log  # ...without the token or the echoed key
