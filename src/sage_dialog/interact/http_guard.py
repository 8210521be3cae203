"""Slow clients at the HTTP layer of ``sage-dialog serve``: a deadline for request headers.

uvicorn drops a kept-alive connection that stays idle (``timeout_keep_alive``), but a connection
that sends a request's headers a byte at a time is never idle, and one that has not finished its
headers has not reached the app, so no app-level timeout sees it; a hundred such connections hold
a hundred sockets forever (a slow-loris attack). :func:`header_deadline_protocol` gives uvicorn
an ``h11`` protocol that closes a connection whose request headers are not complete within
``seconds`` of its first byte (or of the connection, for the first request). The body is bounded
by the app (``serve._read_body`` under ``--request-timeout``).
"""

from __future__ import annotations

import asyncio
from typing import Any


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing connections whose request headers take over ``seconds``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %g s", seconds)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self._waiting_for_headers():
                self._arm()  # the first bytes of a new request on a kept-alive connection
            super().data_received(data)
            if self.cycle is not cycle and not self._waiting_for_headers():
                self._disarm()  # headers complete: the app's own --request-timeout takes over

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineH11


__all__ = ["header_deadline_protocol"]
