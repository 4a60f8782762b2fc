"""The HTTP server around the app: read timeouts, connection bounds, and JSON answers
to what aiohttp refuses before a handler runs.

aiohttp has neither a read timeout nor a connection bound, so the node serves through
a `web.Server` subclass that keeps count of its connections:

- **Head**: a request's head must arrive within `read_timeout` of the connection
  opening or of the previous response; aiohttp's own keep-alive timer, set to
  `read_timeout`, closes idle and stalled-head connections.
- **Body**: one periodic sweep closes a connection whose request body got no byte for
  `read_timeout` (no timer per connection or per request).
- **Bounds**: past `max_connections`, or `max_connections_per_ip` for one peer address
  (trusted proxies are exempt), the oldest idle connection (no request in progress) is
  closed to make room, so a flood of idle connections cannot lock others out. When
  every connection is busy with a request, the new one is closed at once.
- **Errors**: a request line or header that is too long, or one that is not HTTP,
  gets a JSON 414/431/400 (aiohttp answers text/plain and logs a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from node.api.client_ip import in_networks, normalise
from node.api.metrics import METRICS
from node.api.render import json_response
from node.config import ServerConfig
from node.jobs.policy import IPNetwork

log = logging.getLogger(__name__)

# Open files the node needs besides its client connections: SQLite and its WAL, log
# files, connections to services, Docker and the chain.
RESERVED_FILES = 256
# How many of the oldest connections are looked at for an idle one to close: a bounded
# scan, so a flood while every connection is busy costs O(1) per new connection.
SHED_SCAN = 64
# Bounds on the sweep's period (a tenth of the read timeout in between).
SWEEP_MIN_SECONDS = 0.05
SWEEP_MAX_SECONDS = 2.0
LISTEN_BACKLOG = 4096
# Why the server closed a connection itself (the /metrics label values).
CLOSE_REASONS = ("idle_shed", "refused", "body_stalled")
# At most one WARNING per this many seconds about connections closed to keep the bounds.
REPORT_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    read_timeout: float
    max_connections: int
    max_connections_per_ip: int
    exempt_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(
            read_timeout=server.read_timeout,
            max_connections=server.max_connections,
            max_connections_per_ip=server.max_connections_per_ip,
            exempt_networks=server.trusted_proxies,
        )


class Connection(RequestHandler):
    """aiohttp's protocol for one connection, with what the bounds and the sweep need."""

    __slots__ = ("_watched", "_watched_bytes", "_watched_since", "counted", "peer_ip")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.peer_ip = ""
        self.counted = False  # in the server's counts (refused connections are not)
        # The body being watched by the sweep: request, bytes received, since when.
        self._watched: object = None
        self._watched_bytes = 0
        self._watched_since = 0.0

    def is_idle(self) -> bool:
        """No request being handled or waiting: between requests, or still reading a head."""
        return not self._request_in_progress and not self._messages

    def body_stalled(self, now: float, timeout: float) -> bool:
        """True once the body of the request in progress got no byte for `timeout`."""
        request = self._current_request
        if request is None or request.content.is_eof():
            self._watched = None
            return False
        received = request.content.total_bytes
        if request is not self._watched or received != self._watched_bytes:
            self._watched, self._watched_bytes, self._watched_since = request, received, now
            return False
        return now - self._watched_since >= timeout

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse, or an error that escaped the app: JSON."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            body: dict[str, Any] = {"error": "Internal server error"}
        else:
            # A client's mistake, or a scanner: not worth a traceback in the log.
            log.debug("bad HTTP request from %s: %s", request.remote, exc)
            status, body = self._describe(exc, status)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = json_response(body, status=status)
        response.force_close()
        return response

    def _describe(self, exc: BaseException | None, status: int) -> tuple[int, dict[str, Any]]:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_line_size:
                return 414, {"error": "Request URL too long", "params": {"max_bytes": limit}}
            return 431, {"error": "Request header too long", "params": {"max_bytes": limit}}
        if isinstance(exc, HttpProcessingError) and "Too many headers" in (exc.message or ""):
            return 431, {"error": "Too many request headers", "params": {"max_headers": self.max_headers}}
        detail = getattr(exc, "message", None) or str(exc or "") or "cannot parse the request"
        return status, {"error": f"Bad HTTP request: {str(detail)[:200]}"}


class GuardedServer(web.Server):
    """aiohttp's server, counting connections in total and per peer IP."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self._open: dict[Connection, None] = {}  # connect order: the first is the oldest
        self._per_ip: dict[str, dict[Connection, None]] = {}
        self._exempt = limits.exempt_networks
        # Connections closed to keep the bounds, since the start (for /metrics) and as of
        # the last WARNING about them.
        self.closed = {reason: 0 for reason in CLOSE_REASONS}
        self._closed_reported = dict(self.closed)
        self._reported = float("-inf")  # when the last report was logged
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="connection-sweep")

    def __call__(self) -> Connection:
        return Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        assert isinstance(handler, Connection)
        peer = transport.get_extra_info("peername")
        ip = normalise(peer[0]) if isinstance(peer, tuple) and peer else ""
        handler.peer_ip = ip
        limits = self.limits
        # The address's own bound first: room made there is room in the total too.
        same_ip = self._per_ip.get(ip, {})
        if (
            len(same_ip) >= limits.max_connections_per_ip and not self._is_exempt(ip) and not self._make_room(same_ip)
        ) or (len(self._open) >= limits.max_connections and not self._make_room(self._open)):
            self._refuse(handler)
            return
        handler.counted = True
        self._open[handler] = None
        self._per_ip.setdefault(ip, {})[handler] = None

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        assert isinstance(handler, Connection)
        self._forget(handler)  # its file is closed: the count drops now, not when its task ends

    def _is_exempt(self, ip: str) -> bool:
        return bool(self._exempt) and in_networks(ip, self._exempt)

    def _make_room(self, connections: dict[Connection, None]) -> bool:
        """Close the oldest idle connection among the first SHED_SCAN; False if none is idle."""
        for scanned, connection in enumerate(connections):
            if scanned >= SHED_SCAN:
                break
            if connection.is_idle():
                # Its transport closes now but connection_lost comes a loop turn later:
                # make room at once.
                self._forget(connection)
                connection.force_close()
                self.closed["idle_shed"] += 1
                return True
        return False

    def _forget(self, connection: Connection) -> None:
        if not connection.counted:
            return
        connection.counted = False
        self._open.pop(connection, None)
        same_ip = self._per_ip.get(connection.peer_ip)
        if same_ip is not None:
            same_ip.pop(connection, None)
            if not same_ip:
                del self._per_ip[connection.peer_ip]

    def _refuse(self, handler: Connection) -> None:
        self.closed["refused"] += 1
        # Not now: aiohttp is still inside connection_made and would start a request
        # loop on a handler that connection_lost has already torn down.
        self._loop.call_soon(handler.force_close)

    # -- the sweep -----------------------------------------------------------

    def sweep(self, now: float) -> int:
        """Close connections whose request body stalled; returns how many."""
        timeout = self.limits.read_timeout
        stalled = [connection for connection in self._open if connection.body_stalled(now, timeout)]
        for connection in stalled:
            log.debug("closing the connection from %s: request body stalled for %gs", connection.peer_ip, timeout)
            connection.force_close()
        self.closed["body_stalled"] += len(stalled)
        return len(stalled)

    async def _sweep_forever(self) -> None:
        period = min(SWEEP_MAX_SECONDS, max(SWEEP_MIN_SECONDS, self.limits.read_timeout / 10))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            self.sweep(now)
            if now - self._reported >= REPORT_EVERY_SECONDS:
                self._report(now)

    def _report(self, now: float) -> None:
        new = {reason: count - self._closed_reported[reason] for reason, count in self.closed.items()}
        if not any(new.values()):
            return
        log.warning(
            "connections: %d open; %d idle closed to stay within server.max_connections(_per_ip), "
            "%d refused (all busy), %d closed for a request body stalled past server.read_timeout",
            len(self._open),
            new["idle_shed"],
            new["refused"],
            new["body_stalled"],
        )
        self._reported = now
        self._closed_reported = dict(self.closed)

    def snapshot(self) -> tuple[int, Mapping[str, int]]:
        """Open connections, and those closed to keep the bounds by reason (for /metrics)."""
        return len(self._open), self.closed

    async def shutdown(self, timeout: float | None = None) -> None:
        self._sweeper.cancel()
        await super().shutdown(timeout)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            **self._kwargs,
        )


def fit_open_file_limit(max_connections: int) -> int:
    """Raise the soft open-file limit (ulimit -n) toward the hard one if the connection
    bound needs it; returns the number of connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    fitting = max(16, soft - RESERVED_FILES)
    log.warning(
        "server.max_connections is %d but the open-file limit (ulimit -n) is %d: "
        "serving at most %d connections; raise the limit to %d for the full bound",
        max_connections,
        soft,
        fitting,
        needed,
    )
    return fitting


async def serve(
    app: web.Application,
    server: ServerConfig,
    shutdown_timeout: float,
    stop: asyncio.Event,
    listening: Callable[[], None] = lambda: None,
) -> None:
    """Serve `app` until `stop` is set, then shut down as aiohttp's run_app does.

    `listening` is called once the socket accepts (after the app's start-up: migrations,
    containers)."""
    limits = ConnectionLimits.from_config(server)
    limits = ConnectionLimits(
        read_timeout=limits.read_timeout,
        max_connections=fit_open_file_limit(limits.max_connections),
        max_connections_per_ip=limits.max_connections_per_ip,
        exempt_networks=limits.exempt_networks,
    )
    runner = GuardedAppRunner(
        app,
        limits=limits,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=server.read_timeout,
        max_line_size=server.max_url_bytes,
    )
    try:
        # Inside the try: a start-up stopped half-way (Ctrl-C while the containers start)
        # still closes what had started.
        await runner.setup()
        if isinstance(runner.server, GuardedServer):
            app[METRICS].watch_connections(runner.server.snapshot)
        # A deep accept queue: with aiohttp's 128, a burst of connections fills it and a
        # well-behaved client's SYN is dropped and retried a second later (the kernel caps
        # it at net.core.somaxconn).
        await web.TCPSite(runner, server.host, server.port, backlog=LISTEN_BACKLOG).start()
        listening()
        await stop.wait()
    finally:
        await runner.cleanup()
