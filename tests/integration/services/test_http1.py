"""node.services.http1 against real sockets on the loopback: an aiohttp server for the
ordinary answers, raw asyncio servers writing exact bytes for the framing edge cases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.services.http1 import (
    BodyTooLarge,
    ConnectFailed,
    Disconnected,
    Http1Error,
    Http1Pool,
    InvalidResponse,
    Response,
    StreamedAnswer,
    _parse_target,
)
from tests.support.processes import free_port
from tests.support.requirements import unavailable

BEARER = "svc-bearer-5be1c0de"
JSON = {"Content-Type": "application/json"}
WAIT = 5.0  # upper bound for anything that should happen "at once"

# -- servers -------------------------------------------------------------------


class RawServer:
    """asyncio.start_server on 127.0.0.1 whose handler writes exact bytes; counts connections."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self._handler = handler
        self.connections = 0
        self.closed_by_client = 0  # connections on which the client's EOF was seen
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/service_output"

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request (head, body), or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return head, body


async def wait_for_eof(reader: asyncio.StreamReader) -> bool:
    """True when the client closed the connection (nothing more came) within WAIT."""
    try:
        data = await asyncio.wait_for(reader.read(), WAIT)
    except (TimeoutError, ConnectionError):
        return False
    return data == b""


async def eventually(check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.01)


class AiohttpService:
    """An aiohttp app that echoes; records the connections (peer addresses) and headers it saw."""

    def __init__(self) -> None:
        self.peers: set[object] = set()
        self.authorizations: list[str | None] = []
        self.host_headers: list[str | None] = []
        self.accept_encodings: list[str | None] = []
        app = web.Application()
        app.router.add_post("/service_output", self.echo)
        app.router.add_get("/service_output", self.echo)
        app.router.add_post("/chunked", self.chunked)
        app.router.add_post("/empty", self.empty)
        self.app = app

    def _record(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        self.authorizations.append(request.headers.get("Authorization"))
        self.host_headers.append(request.headers.get("Host"))
        self.accept_encodings.append(request.headers.get("Accept-Encoding"))

    async def echo(self, request: web.Request) -> web.Response:
        self._record(request)
        body = await request.read()
        data = json.loads(body) if body else None
        return web.json_response({"echo": data, "method": request.method, "path": request.path_qs})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        await request.read()
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(5):
            await response.write(f"part{index};".encode())
            await asyncio.sleep(0.01)  # separate chunks on the wire
        await response.write_eof()
        return response

    async def empty(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def aiohttp_service(host: str = "127.0.0.1") -> AsyncIterator[tuple[AiohttpService, str]]:
    service = AiohttpService()
    async with TestServer(service.app, host=host) as server:
        yield service, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    pool = Http1Pool()
    yield pool
    await pool.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
StartServer = Callable[[Handler], Awaitable[RawServer]]
MakePool = Callable[..., Http1Pool]


def answer_once_then_note_close(closed: asyncio.Event) -> Handler:
    """A handler that answers one request with "ok", then sets `closed` when the client hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if await wait_for_eof(reader):
            closed.set()

    return handler


@pytest.fixture
async def raw_server() -> AsyncIterator[StartServer]:
    """Start RawServers for the test; all closed after it (after its pools: see make_pool)."""
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = await RawServer(handler).__aenter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.__aexit__(None, None, None)


@pytest.fixture
async def make_pool(raw_server: StartServer) -> AsyncIterator[MakePool]:
    """Http1Pools with the given options; closed after the test, before its servers."""
    pools: list[Http1Pool] = []

    def make(**options: Any) -> Http1Pool:
        pool = Http1Pool(**options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


def job_body(**data: object) -> bytes:
    return json.dumps({"source": 1, "destination": 1, "data": data, "requires_proof": False}).encode()


# -- answers and framing -------------------------------------------------------


async def test_content_length_answer(pool: Http1Pool) -> None:
    async with aiohttp_service() as (service, base):
        response = await pool.request("POST", f"{base}/service_output", job_body(prompt="hello"), JSON, 5)
    assert isinstance(response, Response)
    assert response.status == 200
    assert json.loads(response.body) == {
        "echo": {"source": 1, "destination": 1, "data": {"prompt": "hello"}, "requires_proof": False},
        "method": "POST",
        "path": "/service_output",
    }
    assert response.header("content-type") == "application/json; charset=utf-8"
    assert (b"Content-Length", str(len(response.body)).encode()) in response.headers
    assert service.accept_encodings == [None]  # never ask for a compressed answer


async def test_chunked_answer_in_several_chunks(pool: Http1Pool) -> None:
    async with aiohttp_service() as (service, base):
        first = await pool.request("POST", f"{base}/chunked", b"{}", JSON, 5)
        second = await pool.request("POST", f"{base}/chunked", b"{}", JSON, 5)
    assert first.status == second.status == 200
    assert first.header("Transfer-Encoding") == "chunked"
    assert first.body == second.body == b"part0;part1;part2;part3;part4;"
    assert len(service.peers) == 1  # a chunked answer leaves the connection reusable


async def test_close_delimited_answer(raw_server: StartServer, make_pool: MakePool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody")
        await writer.drain()
        await asyncio.sleep(0.05)  # the body may arrive before the close
        writer.write(b" and more")

    server = await raw_server(handler)
    pool = make_pool()
    response = await pool.request("POST", server.url, b"{}", JSON, 5)
    assert response.status == 200
    assert response.body == b"body and more"
    assert pool.idle_connections() == 0


async def test_http10_answer_without_length_ends_at_eof_and_is_not_reused(
    raw_server: StartServer, make_pool: MakePool
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold server")

    server = await raw_server(handler)
    pool = make_pool()
    for _ in range(2):
        response = await pool.request("POST", server.url, b"{}", JSON, 5)
        assert (response.status, response.body) == (200, b"old server")
    assert server.connections == 2


async def test_interim_100_continue_is_skipped(raw_server: StartServer, make_pool: MakePool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok")
            await writer.drain()

    server = await raw_server(handler)
    pool = make_pool()
    for _ in range(2):
        response = await pool.request("POST", server.url, b"{}", JSON, 5)
        assert (response.status, response.body) == (200, b"ok")
        assert response.header("x-final") == "yes"
        assert response.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.connections == 1


async def test_interim_answer_in_the_same_packet_as_the_final_one(raw_server: StartServer, make_pool: MakePool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
        )
        await read_request(reader)

    server = await raw_server(handler)
    pool = make_pool()
    response = await pool.request("POST", server.url, b"{}", JSON, 5)
    assert (response.status, response.body) == (201, b"done")
    assert response.headers == [(b"Content-Length", b"4")]


async def test_204_has_no_body_and_does_not_hang(pool: Http1Pool) -> None:
    async with aiohttp_service() as (service, base):
        response = await pool.request("POST", f"{base}/empty", b"{}", JSON, 5)
        again = await pool.request("POST", f"{base}/service_output", b"{}", JSON, 5)
    assert (response.status, response.body) == (204, b"")
    assert again.status == 200
    assert len(service.peers) == 1


async def test_head_does_not_hang(pool: Http1Pool) -> None:
    async with aiohttp_service() as (_, base):
        response = await pool.request("HEAD", f"{base}/service_output", b"", {}, 5)
        assert response.status == 200
        assert response.body == b""
        assert int(response.header("Content-Length") or 0) > 0  # the length a GET would have
        again = await pool.request("GET", f"{base}/service_output", b"", {}, 5)
        assert json.loads(again.body)["method"] == "GET"


async def test_the_request_on_the_wire(raw_server: StartServer, make_pool: MakePool) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = await raw_server(handler)
    pool = make_pool()
    base = f"http://127.0.0.1:{server.port}"
    await pool.request("POST", f"{base}/a/service_output", b'{"x":1}', {"Content-Type": "application/json"}, 5)
    await pool.request("GET", f"{base}/service-resources?model_id=m 1", b"", {}, 5)
    (post_head, post_body), (get_head, get_body) = seen
    assert (
        post_head
        == (
            f"POST /a/service_output HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n"
        ).encode()
    )
    assert post_body == b'{"x":1}'
    # A GET without a body sends no Content-Length; a space in the URL is %-encoded.
    assert (
        get_head == f"GET /service-resources?model_id=m%201 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    )
    assert get_body == b""


# -- keep-alive ---------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(pool: Http1Pool) -> None:
    async with aiohttp_service() as (service, base):
        for index in range(20):
            response = await pool.request("POST", f"{base}/service_output", job_body(n=index), JSON, 5)
            assert json.loads(response.body)["echo"]["data"] == {"n": index}
        assert len(service.peers) == 1
        assert pool.idle_connections() == 1


NOT_REUSABLE_ANSWERS = [
    # Says "Connection: close" but leaves the socket open: the client must not reuse it.
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", id="connection-close"),
    # A second answer nobody asked for, glued to the first: the connection is dropped.
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-", id="unrequested-bytes"),
]


@pytest.mark.parametrize("answer", NOT_REUSABLE_ANSWERS)
async def test_a_connection_whose_answer_forbids_reuse_is_not_reused(
    raw_server: StartServer, make_pool: MakePool, answer: bytes
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(answer)

    server = await raw_server(handler)
    pool = make_pool()
    for _ in range(3):
        response = await pool.request("POST", server.url, b"{}", JSON, 5)
        assert response.body == b"ok"
    assert server.connections == 3
    assert pool.idle_connections() == 0


async def test_idle_connection_closed_by_the_server_is_skipped(raw_server: StartServer, make_pool: MakePool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # one answer per connection, then the server closes it while idle
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)

    server = await raw_server(handler)
    pool = make_pool()
    await pool.request("POST", server.url, b"{}", JSON, 5)
    assert pool.idle_connections() == 1
    await eventually(lambda: pool.idle_connections() == 0, "the pool sees the server's close")
    response = await pool.request("POST", server.url, b"{}", JSON, 5)  # no error, no retry
    assert response.body == b"ok"
    assert server.connections == 2


async def test_a_close_the_loop_has_not_seen_yet_is_caught_before_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server (a thread, so it runs while the event loop is blocked) closes the idle
    # connection; the FIN is in the client's socket but the loop has not read it yet.
    monkeypatch.setattr("node.services.http1._CHECK_AFTER_IDLE", 0.0)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    close_first = threading.Event()
    connections: list[socket.socket] = []

    def serve() -> None:
        with listener:
            for _ in range(2):
                conn, _ = listener.accept()
                connections.append(conn)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if len(connections) == 1:
                    close_first.wait(WAIT)
                    conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    pool = Http1Pool()
    try:
        url = f"http://127.0.0.1:{port}/service_output"
        await pool.request("POST", url, b"{}", JSON, 5)
        close_first.set()
        time.sleep(0.2)  # blocks the loop: the connection still looks open to it
        assert pool.idle_connections() == 1
        response = await pool.request("POST", url, b"{}", JSON, 5)
        assert response.body == b"ok"
        assert len(connections) == 2
    finally:
        await pool.close()
        thread.join(WAIT)
        for conn in connections:
            conn.close()


async def test_idle_connections_expire(raw_server: StartServer, make_pool: MakePool) -> None:
    closed = asyncio.Event()
    handler = answer_once_then_note_close(closed)
    server = await raw_server(handler)
    pool = make_pool(idle_seconds=0.2)
    await pool.request("POST", server.url, b"{}", JSON, 5)
    assert pool.idle_connections() == 1
    # Nobody calls: the pool still closes the expired connection on its own.
    await asyncio.wait_for(closed.wait(), WAIT)
    assert pool.idle_connections() == 0
    await pool.request("POST", server.url, b"{}", JSON, 5)
    assert server.connections == 2


async def test_concurrent_requests_each_get_their_own_answer() -> None:
    pool = Http1Pool(max_idle_per_host=8)
    try:
        async with aiohttp_service() as (service, base):

            async def call(index: int) -> None:
                body = job_body(id=index)
                response = await pool.request("POST", f"{base}/service_output", body, JSON, 10)
                assert json.loads(response.body)["echo"]["data"] == {"id": index}

            await asyncio.gather(*(call(index) for index in range(50)))
            assert pool.idle_connections() <= 8
            opened = len(service.peers)
            assert 1 <= opened <= 50
            # The kept ones are reused: sequential calls open nothing new.
            for index in range(5):
                await call(index)
            assert len(service.peers) == opened
    finally:
        await pool.close()


# -- failures ------------------------------------------------------------------------


async def test_connection_refused_names_the_address(pool: Http1Pool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectFailed) as caught:
            await pool.request("POST", f"http://127.0.0.1:{port}/service_output", b"{}", JSON, 5)
    assert str(caught.value) == f"could not connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    assert isinstance(caught.value, Http1Error)


async def test_server_dropping_mid_body_is_a_disconnection(raw_server: StartServer, make_pool: MakePool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 512\r\n\r\n" + b"x" * 120)
        await writer.drain()

    server = await raw_server(handler)
    pool = make_pool()
    with pytest.raises(Disconnected) as caught:
        await pool.request("POST", server.url, b"{}", JSON, 5)
    assert (
        str(caught.value) == f"the service at 127.0.0.1:{server.port} closed the connection after 120 of 512 body bytes"
    )
    assert (caught.value.body_bytes, caught.value.expected_bytes) == (120, 512)


async def test_server_dropping_mid_chunked_body_or_before_answering() -> None:
    answers = iter(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-"]
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(next(answers))
        await writer.drain()

    async with RawServer(handler) as server:
        pool = Http1Pool()
        where = f"127.0.0.1:{server.port}"
        try:
            messages = []
            for _ in range(3):
                with pytest.raises(Disconnected) as caught:
                    await pool.request("POST", server.url, b"{}", JSON, 5)
                messages.append(str(caught.value))
        finally:
            await pool.close()
    assert messages == [
        f"the service at {where} closed the connection after 5 body bytes of a chunked answer",
        f"the service at {where} closed the connection before answering",
        f"the service at {where} closed the connection in the middle of the response headers",
    ]


async def test_invalid_answer(raw_server: StartServer, make_pool: MakePool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await wait_for_eof(reader)

    server = await raw_server(handler)
    pool = make_pool()
    with pytest.raises(
        InvalidResponse, match=rf"^the service at 127\.0\.0\.1:{server.port} sent an invalid HTTP answer: "
    ):
        await pool.request("POST", server.url, b"{}", JSON, 5)
    assert pool.idle_connections() == 0


async def test_timeout_closes_the_connection(raw_server: StartServer, make_pool: MakePool) -> None:
    requests = 0
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        if requests == 1:  # never answers the first request
            if await wait_for_eof(reader):
                closed.set()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await wait_for_eof(reader)

    server = await raw_server(handler)
    pool = make_pool()
    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        await pool.request("POST", server.url, b"{}", JSON, 0.3)
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 1.5
    assert str(caught.value) == f"the service at 127.0.0.1:{server.port} did not answer within 0.3s"
    assert isinstance(caught.value, asyncio.TimeoutError)
    await asyncio.wait_for(closed.wait(), WAIT)  # the server sees the connection closed
    response = await pool.request("POST", server.url, b"{}", JSON, 5)
    assert response.body == b"ok"
    assert server.connections == 2


async def test_timeout_while_connecting() -> None:
    # A listening socket with a full backlog and nobody accepting: connect() hangs (on Linux
    # the SYN is dropped once the accept queue is full).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        pool = Http1Pool()
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=rf"^could not connect to 127\.0\.0\.1:{port} within 0\.3s$"):
                await pool.request("POST", f"http://127.0.0.1:{port}/x", b"{}", JSON, 0.3)
            assert time.monotonic() - started < 1.5
        finally:
            await pool.close()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_cancellation_closes_the_connection(raw_server: StartServer, make_pool: MakePool) -> None:
    got_request = asyncio.Event()
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        got_request.set()
        if await wait_for_eof(reader):
            closed.set()

    server = await raw_server(handler)
    pool = make_pool()
    task = asyncio.create_task(pool.request("POST", server.url, b"{}", JSON, 30))
    await asyncio.wait_for(got_request.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), WAIT)
    assert pool.idle_connections() == 0


async def test_max_body_bytes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            size = int(request[1])
            if request[0].startswith(b"POST /chunked"):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(size // 10):
                    writer.write(b"a\r\n0123456789\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (size, b"x" * size))

    async with RawServer(handler) as server:
        pool = Http1Pool(max_body_bytes=100)
        base = f"http://127.0.0.1:{server.port}"
        try:
            assert len((await pool.request("POST", f"{base}/length", b"100", JSON, 5)).body) == 100
            assert len((await pool.request("POST", f"{base}/chunked", b"100", JSON, 5)).body) == 100
            assert server.connections == 1
            for path in ("length", "chunked"):
                with pytest.raises(BodyTooLarge) as caught:
                    await pool.request("POST", f"{base}/{path}", b"110", JSON, 5)
                assert (
                    str(caught.value) == f"the service at 127.0.0.1:{server.port} sent a body over the 100-byte limit"
                )
            assert pool.idle_connections() == 0  # each oversized answer cost its connection
            assert len((await pool.request("POST", f"{base}/length", b"5", JSON, 5)).body) == 5
            assert server.connections == 3
        finally:
            await pool.close()


async def test_a_declared_length_over_max_body_bytes_fails_before_the_body_is_read(
    raw_server: StartServer, make_pool: MakePool
) -> None:
    # The head promises 1 GB and the first bytes of it follow; the rest never comes.
    # The limit is judged on the declared length at once, not after reading (or waiting for) the body.
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 50)
        await writer.drain()
        await wait_for_eof(reader)
        closed.set()

    server = await raw_server(handler)
    pool = make_pool(max_body_bytes=100)
    with pytest.raises(BodyTooLarge):
        await asyncio.wait_for(pool.request("POST", server.url, b"{}", JSON, 30), WAIT)
    await asyncio.wait_for(closed.wait(), WAIT)  # and the connection is closed
    assert pool.idle_connections() == 0


async def test_the_bearer_token_reaches_the_service_but_no_error(raw_server: StartServer, make_pool: MakePool) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {BEARER}"}
    async with aiohttp_service() as (service, base):
        pool = Http1Pool()
        try:
            await pool.request("POST", f"{base}/service_output", b"{}", headers, 5)
        finally:
            await pool.close()
    assert service.authorizations == [f"Bearer {BEARER}"]

    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # Disconnected
            b"garbage\r\n\r\n",  # InvalidResponse
            b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n" + b"x" * 999,  # BodyTooLarge
            None,  # timeout
        ]
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        answer = next(answers)
        if answer is None:
            await wait_for_eof(reader)
            return
        writer.write(answer)
        await writer.drain()

    errors: list[BaseException] = []
    server = await raw_server(handler)
    pool = make_pool(max_body_bytes=100)
    for _ in range(4):
        with pytest.raises((Http1Error, TimeoutError)) as caught:
            await pool.request("POST", server.url, b"{}", headers, 0.3)
        errors.append(caught.value)
    with pytest.raises(ConnectFailed) as refused:
        await pool.request("POST", f"http://127.0.0.1:{free_port()}/x", b"{}", headers, 5)
    errors.append(refused.value)
    assert [type(error) for error in errors] == [
        Disconnected,
        InvalidResponse,
        BodyTooLarge,
        TimeoutError,
        ConnectFailed,
    ]
    for error in errors:
        for text in (str(error), repr(error), repr(error.args), repr(error.__cause__), repr(error.__context__)):
            assert BEARER not in text


async def test_header_injection_is_refused(pool: Http1Pool) -> None:
    async with aiohttp_service() as (service, base):
        url = f"{base}/service_output"
        for bad in ("x\r\nX-Injected: 1", "x\nX-Injected: 1", "x\rY", "x\0"):
            with pytest.raises(ValueError) as caught:
                await pool.request("POST", url, b"{}", {"Authorization": f"Bearer {BEARER}{bad}"}, 5)
            assert BEARER not in str(caught.value)
            assert str(caught.value) == "the value of HTTP header 'Authorization' contains CR, LF or NUL"
        for name in ("X Bad", "X-Bad\r\n", "", "X:Y"):
            with pytest.raises(ValueError, match="invalid HTTP header name"):
                await pool.request("POST", url, b"{}", {name: "v"}, 5)
        with pytest.raises(ValueError, match="invalid HTTP method"):
            await pool.request("PO ST", url, b"{}", {}, 5)
        with pytest.raises(ValueError, match="set by the client"):
            await pool.request("POST", url, b"{}", {"Content-Length": "1"}, 5)
        assert service.peers == set()  # nothing was sent


async def test_close_closes_idle_connections() -> None:
    closed = asyncio.Event()
    handler = answer_once_then_note_close(closed)
    async with RawServer(handler) as server:
        pool = Http1Pool()
        await pool.request("POST", server.url, b"{}", JSON, 5)
        assert pool.idle_connections() == 1
        await pool.close()
        await asyncio.wait_for(closed.wait(), WAIT)
        assert pool.idle_connections() == 0
        with pytest.raises(Http1Error, match="the HTTP connection pool is closed"):
            await pool.request("POST", server.url, b"{}", JSON, 5)


async def test_close_during_a_request_fails_it() -> None:
    got_request = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        got_request.set()
        await wait_for_eof(reader)

    async with RawServer(handler) as server:
        pool = Http1Pool()
        task = asyncio.create_task(pool.request("POST", server.url, b"{}", JSON, 30))
        await asyncio.wait_for(got_request.wait(), WAIT)
        await pool.close()
        with pytest.raises(Http1Error, match="the HTTP connection pool was closed during the request"):
            await task


# -- addresses -----------------------------------------------------------------------


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_loopback(pool: Http1Pool) -> None:
    async with aiohttp_service(host="::1") as (service, base):
        port = int(base.rsplit(":", 1)[1])
        url = f"http://[::1]:{port}/service_output"
        for _ in range(2):
            response = await pool.request("POST", url, b'{"a":1}', JSON, 5)
            assert json.loads(response.body)["echo"] == {"a": 1}
    assert service.host_headers == [f"[::1]:{port}"] * 2
    assert len(service.peers) == 1
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        closed_port = sock.getsockname()[1]
        with pytest.raises(ConnectFailed, match=rf"^could not connect to \[::1\]:{closed_port}: "):
            await pool.request("POST", f"http://[::1]:{closed_port}/x", b"{}", JSON, 5)


@pytest.fixture(scope="module")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed (scripts/provision.sh installs it)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https(self_signed_cert: tuple[Path, Path]) -> None:
    cert, key = self_signed_cert
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    service = AiohttpService()
    runner = web.AppRunner(service.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        trusting = Http1Pool(ssl_context_factory=lambda: ssl.create_default_context(cafile=str(cert)))
        try:
            for host in ("127.0.0.1", "localhost"):
                for _ in range(2):
                    response = await trusting.request("POST", f"https://{host}:{port}/service_output", b"[1]", JSON, 5)
                    assert json.loads(response.body)["echo"] == [1]
            assert len(service.peers) == 2  # one per host name
        finally:
            await trusting.close()
        default = Http1Pool()  # the system's CAs: the self-signed certificate is refused
        try:
            with pytest.raises(
                ConnectFailed, match=rf"^could not connect to 127\.0\.0\.1:{port}: .*CERTIFICATE_VERIFY_FAILED"
            ):
                await default.request("POST", f"https://127.0.0.1:{port}/service_output", b"[1]", JSON, 5)
        finally:
            await default.close()
    finally:
        await runner.cleanup()


def test_url_parsing() -> None:
    target = _parse_target("http://[::1]:5000/a/b?x=1&y=2")
    assert (target.host, target.port, target.where, target.host_header) == ("::1", 5000, "[::1]:5000", "[::1]:5000")
    assert target.start_line_tail == " /a/b?x=1&y=2 HTTP/1.1\r\n"
    target = _parse_target("HTTPS://Example.COM")
    assert (target.key, target.tls, target.host_header) == (("https", "example.com", 443), True, "example.com")
    assert target.start_line_tail == " / HTTP/1.1\r\n"
    assert _parse_target("http://h:80/").host_header == "h:80"
    assert _parse_target("http://h/a b#frag").start_line_tail == " /a%20b HTTP/1.1\r\n"
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        _parse_target("ftp://h/")
    with pytest.raises(ValueError) as caught:
        _parse_target("http://user:s3cret@h/")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError):
        _parse_target("http://h:99999/")
    with pytest.raises(ValueError, match="no host"):
        _parse_target("http:///x")


# -- streamed answers (Http1Pool.stream) ---------------------------------------------


async def read_all(answer: StreamedAnswer) -> list[bytes]:
    chunks = []
    while chunk := await answer.read():
        chunks.append(chunk)
    return chunks


async def test_a_stream_gives_chunks_as_they_arrive_and_its_connection_back_at_the_end(pool: Http1Pool) -> None:
    async with aiohttp_service() as (service, base):
        answer = await pool.stream("POST", f"{base}/chunked", b"{}", JSON, read_timeout=5)
        assert answer.status == 200 and answer.header("transfer-encoding") == "chunked"
        chunks = await read_all(answer)
        answer.release()
        assert len(chunks) > 1 and b"".join(chunks) == b"part0;part1;part2;part3;part4;"
        assert pool.idle_connections() == 1
        again = await pool.request("POST", f"{base}/chunked", b"{}", JSON, 5)  # the same connection
    assert again.body == b"part0;part1;part2;part3;part4;" and len(service.peers) == 1


async def test_a_stream_released_before_its_end_closes_its_connection(
    raw_server: StartServer, make_pool: MakePool
) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        if await wait_for_eof(reader):
            closed.set()

    server = await raw_server(handler)
    pool = make_pool()
    answer = await pool.stream("POST", server.url, b"{}", JSON, read_timeout=5)
    assert await answer.read() == b"first"
    answer.release()
    await asyncio.wait_for(closed.wait(), WAIT)
    assert pool.idle_connections() == 0


async def test_a_stream_times_out_when_nothing_comes(raw_server: StartServer, make_pool: MakePool) -> None:
    async def silent_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await asyncio.sleep(WAIT)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(WAIT)

    pool = make_pool()
    answer = await pool.stream("POST", (await raw_server(silent_after_head)).url, b"{}", JSON, read_timeout=0.2)
    assert await answer.read() == b"abc"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await answer.read()
    assert 0.15 < time.monotonic() - started < 2
    answer.release()
    with pytest.raises(TimeoutError):  # no head within the read timeout
        await pool.stream("POST", (await raw_server(silent)).url, b"{}", JSON, read_timeout=0.2)
    # The whole exchange's bound holds however often bytes come.
    answer = await pool.stream(
        "POST", (await raw_server(silent_after_head)).url, b"{}", JSON, read_timeout=5, total_timeout=0.3
    )
    await answer.read()
    with pytest.raises(TimeoutError):
        await answer.read()
    answer.release()
    assert pool.idle_connections() == 0


async def test_a_stream_cut_by_the_server_is_a_disconnection(raw_server: StartServer, make_pool: MakePool) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")
        await writer.drain()

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"of it")

    pool = make_pool()
    server = await raw_server(cut)
    answer = await pool.stream("POST", server.url, b"{}", JSON, read_timeout=5)
    assert await answer.read() == b"part"
    with pytest.raises(Disconnected) as caught:
        await answer.read()
    answer.release()
    where = f"127.0.0.1:{server.port}"
    assert str(caught.value) == f"the service at {where} closed the connection in the middle of its answer"
    answer = await pool.stream("POST", (await raw_server(close_delimited)).url, b"{}", JSON, read_timeout=5)
    assert b"".join(await read_all(answer)) == b"all of it"  # no length, not chunked: ends at EOF
    answer.release()
    assert pool.idle_connections() == 0


async def test_close_during_a_stream_fails_it_saying_so(raw_server: StartServer) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")
        await wait_for_eof(reader)

    pool = Http1Pool()
    answer = await pool.stream("POST", (await raw_server(endless)).url, b"{}", JSON, read_timeout=5)
    assert await answer.read() == b"part"
    reading = asyncio.create_task(answer.read())
    await asyncio.sleep(0)  # the reader waits for the next chunk
    await pool.close()
    # The pool's reason, not the disconnection its closing causes.
    with pytest.raises(Http1Error) as caught:
        await reading
    assert str(caught.value) == "the HTTP connection pool was closed during the request"
    with pytest.raises(Http1Error, match="pool was closed"):
        await answer.read()
    answer.release()


async def test_a_slow_reader_gets_every_byte_of_a_large_stream(raw_server: StartServer, make_pool: MakePool) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: past the point where the client stops reading the socket

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for start in range(0, len(payload), 65536):
            writer.write(payload[start : start + 65536])
            await writer.drain()
        await read_request(reader)  # the connection is reused for a second request
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await raw_server(large)
    pool = make_pool()
    answer = await pool.stream("POST", server.url, b"{}", JSON, read_timeout=5)
    received = bytearray()
    while chunk := await answer.read():
        received += chunk
        await asyncio.sleep(0.001)
    answer.release()
    assert bytes(received) == payload
    assert (await pool.request("POST", server.url, b"{}", JSON, 5)).body == b"ok"
    assert server.connections == 1
