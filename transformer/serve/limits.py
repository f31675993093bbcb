"""The request body limit of `transformer serve`: 413 for a body over --max-body-bytes, whether its
Content-Length says so or it is streamed without one (chunked). A pure ASGI middleware: the body is read here,
at most max_bytes of it, and replayed to the app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """Answers 413 to an HTTP request whose body is over `max_bytes`, before the app sees any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _answer(send, 400, f"Content-Length {declared[:40]!r} is not a number of bytes")
                return
            if length > self.max_bytes:
                await self._too_large(send, f"{length} bytes")
                return
        body, complete = await self._read(receive)
        if body is None:
            if complete:  # over the limit
                await self._too_large(send, f"more than {self.max_bytes} bytes")
            return  # the client went away
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes | None, bool]:
        """(the whole body, True); (None, True) when it grows past max_bytes; (None, False) on a disconnect."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None, True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    async def _too_large(self, send: Send, size: str) -> None:
        await _answer(send, 413, f"the request body ({size}) is over this server's limit of {self.max_bytes} bytes "
                                 "(--max-body-bytes): send a shorter text")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app `body` in one message, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(send: Send, status: int, detail: str) -> None:
    content = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": content})
