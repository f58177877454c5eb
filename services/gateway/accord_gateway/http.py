"""The gateway's HTTP/JSON app (FastAPI). For now: liveness and readiness of the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from accord_kit.logging import get_logger

log = get_logger("accord.gateway.http")


def create_app(is_ready: Callable[[], bool]) -> FastAPI:
    app = FastAPI(
        title="Accord gateway",
        version="0.1.0",
        description="Current status of Accord's service level agreements.",
    )

    @app.get("/healthz", summary="Liveness and readiness of the gateway")
    async def healthz() -> dict[str, Any]:
        return {"status": "SERVING" if is_ready() else "NOT_SERVING"}

    return app


def http_task(app: FastAPI, host: str, port: int) -> Callable[[asyncio.Event], Any]:
    """A runtime task that serves `app` until the service stops."""

    async def run(stop: asyncio.Event) -> None:
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off"))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        serving = asyncio.create_task(server.serve())
        log.info("http_started", address=f"http://{host}:{port}")
        await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving

    return run
