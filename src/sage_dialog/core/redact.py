"""The one place where secrets are taken out of text before it is stored, logged or returned.

A *secret* is any value registered with :func:`add_secret` (the backends register the API key they
read, ``serve`` its bearer token) and the value of every environment variable whose name looks like
a credential (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``). :func:`redact` replaces each
with ``[REDACTED]`` and also blanks credential-looking URL query parameters (``?api_key=...``) and
``Authorization: Bearer ...`` values and the user-info of URLs (``http://user:password@host``),
which may carry a key nobody registered.

Every error path goes through here: :class:`~sage_dialog.backends.base.BackendError` messages, the
CLI's error printer (tracebacks included), annotate's rejects file and ``serve``'s log and error
bodies (:func:`install_log_filter`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
_ENV_NAME = re.compile(r"(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)
# secrets shorter than this are not masked: replacing "a" everywhere would destroy every message
_MIN_LEN = 4
_registered: set[str] = set()
_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|auth|password|secret)=)[^&\s\"'#]*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+")
# the user-info part of a URL (``http://user:password@host/``): masked whole, the user name may be a token
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")


def add_secret(value: str | None) -> None:
    """Remember ``value`` as a secret (ignored when empty or very short)."""
    if value and len(value.strip()) >= _MIN_LEN:
        _registered.add(value.strip())


def add_secret_env(*names: str) -> None:
    """Register the current values of the environment variables ``names`` (a backend's key variable)."""
    for n in names:
        add_secret(os.environ.get(n))


def secrets(extra: Iterable[str] = ()) -> list[str]:
    """Every configured secret, longest first (so a key that contains another is masked whole)."""
    vals = set(_registered)
    vals.update(v.strip() for k, v in os.environ.items() if _ENV_NAME.search(k) and len(v.strip()) >= _MIN_LEN)
    vals.update(e for e in extra if e and len(e) >= _MIN_LEN)
    return sorted(vals, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every configured secret, credential query parameter and bearer value masked."""
    if not text:
        return text
    for s in secrets():
        if s in text:
            text = text.replace(s, MASK)
    text = _QUERY.sub(lambda m: m.group(1) + MASK, text)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _BEARER.sub(lambda m: m.group(1) + MASK, text)


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string inside a JSON-like value."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message (and its arguments) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Each part is redacted in place, keeping the shape of ``args``: some formatters unpack it
        # (uvicorn's access log takes exactly five arguments).
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        return True


LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sage_dialog", "httpx", "openai")


def install_log_filter(logger_names: Iterable[str] = LOGGERS) -> None:
    """Put a :class:`RedactingFilter` on the named loggers and on the root logger's handlers (idempotent).

    A filter on a logger survives ``logging.config.dictConfig`` (which uvicorn runs when it starts)
    but sees only records logged through that very logger; a filter on a handler sees every record
    the handler prints. Both are installed.
    """
    for name in logger_names:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in lg.filters):
            lg.addFilter(RedactingFilter())
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
