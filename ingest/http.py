"""The daemon's HTTP server: health, metrics, the channels' webhooks (later the agent API)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ingest.config import HttpConfig
from ingest.health import Health

log = logging.getLogger(__name__)


def build_app(health: Health, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """`routes`: the channels' webhooks, served beside health and metrics."""

    async def healthz(request: Request) -> Response:
        report = await health.check()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    async def metrics(request: Request) -> Response:
        await health.check()  # refreshes the gauges the scrape reads
        await health.refresh_for_scrape()
        return Response(health.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics), *routes])


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, config: HttpConfig, app: Any) -> None:
        self.config = config
        self.server = _EmbeddedServer(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="http")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise RuntimeError("HTTP server stopped during start")
            await asyncio.sleep(0.01)
        log.info("http listening", extra={"host": self.config.host, "port": self.port})

    @property
    def port(self) -> int | None:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
