"""HTTP GETs through an ASGI app called directly: no socket, no server (in-process tests
and measurements of an HTTP app's own work) — whole, or streamed (server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

Asgi = Callable[..., Awaitable[None]]


def _scope(path: str, authorization: str | None) -> dict[str, Any]:
    path, _, query = path.partition("?")
    headers = [(b"host", b"127.0.0.1")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip


async def asgi_get(app: Asgi, path: str, authorization: str | None = None) -> tuple[int, bytes]:
    """(status, body) of `GET path`, with the `Authorization` header when given."""
    scope = _scope(path, authorization)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


class AsgiStream:
    """A streamed GET through an ASGI app called directly (`asgi_stream`): the status once the
    response starts, then each chunk of its body as the app sends it (`next_chunk`)."""

    def __init__(self) -> None:
        self.status = 0
        self.started = asyncio.Event()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def next_chunk(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.chunks.get(), timeout)


@contextlib.asynccontextmanager
async def asgi_stream(app: Asgi, path: str, authorization: str | None = None) -> AsyncIterator[AsgiStream]:
    """`GET path` left running while the caller reads its body (server-sent events); at the end
    the client goes away (`http.disconnect`) and the app's task is cancelled."""
    scope = _scope(path, authorization)
    stream, gone = AsgiStream(), asyncio.Event()
    requested = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            stream.status = int(message["status"])
            stream.started.set()
        elif message.get("body"):
            stream.chunks.put_nowait(message["body"])

    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        await asyncio.wait_for(stream.started.wait(), 5)
        yield stream
    finally:
        gone.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
