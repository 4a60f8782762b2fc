"""A lean keep-alive HTTP/1.1 client for the calls to the services.

Two jobs: send a request whose body is already in memory and read the whole
answer into memory (`request`), or read the answer's body as it arrives
(`stream`: the services' streamed output). aiohttp's ClientSession does far more
(cookies, redirects, tracing, decompression) and costs ~4x the CPU per call, ~10x
per stream; the node makes one such call per job, so this client is built on
asyncio Protocols and httptools (the llhttp parser) with as little per-call work
as possible. A stream borrows a pooled connection: its own protocol reads it, and
it goes back to the pool only when its answer was read to the end.

Rules the node relies on:
- A request is never sent twice: no retry, ever (a POST runs a job). A pooled
  connection already known to be closed is skipped *before* writing, which is not
  a retry.
- A connection that saw a timeout, a cancellation, an error or an unexpected byte
  is closed, never reused.
- No exception text contains a request header (they carry bearer tokens).
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httptools

__all__ = [
    "BodyTooLarge",
    "ConnectFailed",
    "Disconnected",
    "Http1Error",
    "Http1Pool",
    "InvalidResponse",
    "Response",
    "StreamedAnswer",
]


class Http1Error(Exception):
    """Any failure of a request other than a timeout (TimeoutError) or a cancellation."""


class ConnectFailed(Http1Error):
    """No connection could be opened: nothing was sent."""


class Disconnected(Http1Error):
    """The connection closed before a whole answer arrived (the request may have run)."""

    def __init__(self, message: str, body_bytes: int = 0, expected_bytes: int | None = None) -> None:
        super().__init__(message)
        self.body_bytes = body_bytes
        self.expected_bytes = expected_bytes


class BodyTooLarge(Http1Error):
    """The answer's body is over `max_body_bytes`."""


class InvalidResponse(Http1Error):
    """The answer is not valid HTTP/1.x (or asks for something unsupported, like an upgrade)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer. `headers` is parsed from `head` on each access (the hot path never needs it)."""

    status: int
    head: bytes  # the status line and headers as received, without the blank line
    body: bytes

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """(name, value) pairs in order, as received (names keep their case)."""
        return _split_headers(self.head)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), decoded as latin-1, or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in _split_headers(self.head):
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


def _split_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    # llhttp has validated the head already (strict mode: CRLF lines, no obs-fold),
    # so a plain split is exact.
    pairs = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        pairs.append((name, value.strip(b" \t")))
    return pairs


def _framing(head: bytes) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of an answer's head; (None, False): the body ends with the connection."""
    content_length: int | None = None
    chunked = False
    for name, value in _split_headers(head):
        lower = name.lower()
        if lower == b"content-length":
            content_length = int(value)
        elif lower == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return content_length, chunked


def _final_head(raw: bytes) -> bytes:
    """The head of the final answer in `raw` (bytes from the answer's start): skip any 1xx."""
    start = 0
    while True:
        while raw.startswith(b"\r\n", start):  # llhttp tolerates empty lines between messages
            start += 2
        end = raw.find(b"\r\n\r\n", start)
        if end < 0:
            return raw[start:]
        # "HTTP/1.1 100 Continue": the status is at offset 9 (llhttp checked the form).
        if raw[start + 9 : start + 10] != b"1":
            return raw[start:end]
        start = end + 4


# RFC 9110 token: what a method or a header name may contain.
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z").match
# Characters left as they are in a request target; everything else is %-encoded.
_TARGET_SAFE = "/?=&;:@!$'()*+,%~-._[]"
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_NEVER = float("inf")
_MAX_CACHED = 1024  # distinct URLs and request heads remembered
# A connection idle for longer than this is checked before reuse (one poll() call): a
# server closes idle connections after its keep-alive timeout (uvicorn and hypercorn
# after 5 s), and its FIN may be waiting in the socket while the loop was busy.
_CHECK_AFTER_IDLE = 1.0


class _Stop(Exception):
    """Raised inside a parser callback to make feed_data() stop at once."""


def _describe_os_error(error: BaseException) -> str:
    # asyncio says "[Errno 111] Connect call failed ('127.0.0.1', 5000)", uvloop says
    # "[Errno 111] Connection refused": give operators the same plain text on both.
    if isinstance(error, (ssl.SSLError, ssl.CertificateError, socket.gaierror)):
        return str(error)
    if isinstance(error, OSError) and error.errno:
        return f"[Errno {error.errno}] {os.strerror(error.errno)}"
    return str(error) or type(error).__name__


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[str, str, int]  # (scheme, host, port): the idle list it belongs to
    host: str  # for connect(): no brackets around an IPv6 literal
    port: int
    tls: bool
    where: str  # "host:port" for messages, IPv6 in brackets
    start_line_tail: str  # " /path HTTP/1.1\r\n"
    host_header: str


def _parse_target(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: only http and https")
    netloc = parts.netloc
    if "@" in netloc:
        # Never echo the URL here: it carries a password.
        raise ValueError("credentials in the URL are not supported: pass an Authorization header")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in the URL {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)  # .port raises ValueError if bad
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    bracketed = f"[{host}]" if ":" in host else host
    # Host: exactly what the URL says (a port only when it names one), as aiohttp does.
    host_header = bracketed if parts.port is None else f"{bracketed}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    path = quote(path, safe=_TARGET_SAFE)  # no space or control byte can reach the start line
    return _Target(
        key=(scheme, host, port),
        host=host,
        port=port,
        tls=scheme == "https",
        where=f"{bracketed}:{port}",
        start_line_tail=f" {path} HTTP/1.1\r\n",
        host_header=host_header,
    )


def _header_lines(headers: Mapping[str, str], host_header: str) -> str:
    lines = []
    for name, value in headers.items():
        if not _is_token(name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if "\r" in value or "\n" in value or "\0" in value:
            # Header injection: never name the value, it may be a token.
            raise ValueError(f"the value of HTTP header {name!r} contains CR, LF or NUL")
        lower = name.lower()
        if lower == "host":
            host_header = value
            continue
        if lower in ("content-length", "transfer-encoding"):
            raise ValueError(f"HTTP header {name!r} is set by the client itself")
        lines.append(f"{name}: {value}\r\n")
    return f"Host: {host_header}\r\n" + "".join(lines)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: at most one request in flight at a time.

    Header lines are not handed to Python one by one (no on_header callback): on
    the hot path that costs more CPU than the rest of the parsing. The raw bytes up
    to the end of the head are kept instead, and read only when needed.
    """

    __slots__ = (
        "_body",
        "_body_bytes",
        "_error",
        "_head_request",
        "_headers_done",
        "_length_checked",
        "_max_body",
        "_message_begun",
        "_open",
        "_parser",
        "_raw",
        "_waiter",
        "closed",
        "deadline",
        "idle_since",
        "reusable",
        "stream",
        "target",
        "timeout",
        "transport",
    )

    def __init__(self, target: _Target, max_body: int | None, open_set: set[_Connection]) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.deadline = _NEVER
        self.timeout = 0.0
        # The StreamedAnswer reading this connection while it is borrowed (it is the transport's
        # protocol then, so a failure of the connection's own must reach it).
        self.stream: StreamedAnswer | None = None
        self._max_body = max_body
        self._open = open_set
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._error: Http1Error | None = None
        self._head_request = False
        self._message_begun = False
        self._headers_done = False
        self._length_checked = False
        self._raw: list[bytes] = []  # what arrived until the head was complete
        self._body: list[bytes] = []
        self._body_bytes = 0

    # -- the request side ------------------------------------------------

    def send(self, data: bytes, head_request: bool, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._waiter = waiter = loop.create_future()
        self._error = None
        self._head_request = head_request
        self.reusable = False
        self._message_begun = self._headers_done = self._length_checked = False
        self._raw = []
        self._body = []
        self._body_bytes = 0
        self.transport.write(data)  # one write: head and body in one segment when small
        return waiter

    def time_out(self, timeout: float) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # answered just in time: the caller has not resumed yet
        waiter.set_exception(TimeoutError(f"the service at {self.target.where} did not answer within {timeout:g}s"))
        self.abort()

    def park(self, now: float) -> None:
        self._waiter = None
        self._raw = self._body = []  # do not hold on to the last answer's bytes
        self.idle_since = now

    def is_usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def is_quiet(self) -> bool:
        """True when the socket has nothing to read: no FIN, no RST, no stray bytes."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            fd = sock.fileno()
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(fd, select.POLLIN | select.POLLPRI)
                return not poller.poll(0)
            readable, _, failed = select.select([fd], [], [fd], 0)
            return not readable and not failed
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        # After an error nothing buffered is worth sending: drop the socket now.
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def fail(self, error: Http1Error) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.stream is not None:
            self.stream.fail(error)
        self.abort()

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # always a stream transport here
        self._open.add(self)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (while idle, or after the whole answer): this
            # connection's framing can no longer be trusted.
            self.reusable = False
            self.abort()
            return
        if not self._headers_done:
            self._raw.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(
                InvalidResponse(f"the service at {self.target.where} switched protocols (HTTP 101): not supported")
            )
        except httptools.HttpParserError as error:
            if self._error is not None:  # raised on purpose by a callback (e.g. BodyTooLarge)
                self.fail(self._error)
            elif waiter.done():  # extra bytes after a whole answer: keep the answer, drop the connection
                self.reusable = False
                self.abort()
            else:
                reason = str(error) or type(error).__name__
                self.fail(InvalidResponse(f"the service at {self.target.where} sent an invalid HTTP answer: {reason}"))
        else:
            # An answer still incomplete after its head: if it declares a length over
            # the limit, fail now rather than read the body first. Whole answers (the
            # usual case, one segment) never get here: no cost on the hot path.
            if self._headers_done and not self._length_checked and not waiter.done() and self._max_body is not None:
                self._check_declared_length(self._max_body)

    def eof_received(self) -> bool | None:
        self._closed_by_peer(None)
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._open.discard(self)
        self._closed_by_peer(exc)

    def _closed_by_peer(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # idle: the pool skips it
        expected: int | None = None
        if not self._message_begun:
            what = "before answering"
        elif not self._headers_done:
            what = "in the middle of the response headers"
        else:
            expected, chunked = self._framing()
            if expected is None and not chunked and not self._head_request:
                # No length and not chunked: the body is whatever came before EOF
                # (httptools has no finish(), so EOF is judged here).
                self._complete(reusable=False)
                return
            if expected is not None:
                what = f"after {self._body_bytes} of {expected} body bytes"
            else:
                what = f"after {self._body_bytes} body bytes of a chunked answer"
        suffix = f" ({_describe_os_error(exc)})" if exc is not None else ""
        message = f"the service at {self.target.where} closed the connection {what}{suffix}"
        waiter.set_exception(Disconnected(message, self._body_bytes, expected))

    def _check_declared_length(self, limit: int) -> None:
        self._length_checked = True
        expected, _ = self._framing()
        if expected is not None and expected > limit:
            self.fail(BodyTooLarge(f"the service at {self.target.where} sent a body over the {limit}-byte limit"))

    def _framing(self) -> tuple[int | None, bool]:
        """(Content-Length, chunked) of the current answer, read from its head (rare path)."""
        return _framing(_final_head(b"".join(self._raw)))

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            raise _Stop  # a second answer to one request: see data_received
        self._message_begun = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real head follows
        self._headers_done = True
        if self._head_request:
            # llhttp cannot be told this answer has no body: take the headers and
            # do not reuse the connection (its parser now expects a body).
            self._complete(reusable=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_bytes += len(body)
        limit = self._max_body
        if limit is not None and self._body_bytes > limit:
            self._error = BodyTooLarge(f"the service at {self.target.where} sent a body over the {limit}-byte limit")
            raise _Stop

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return  # the end of an interim answer: the real one follows
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        # should_keep_alive() is False after "Connection: close", for HTTP/1.0
        # without keep-alive, and for a body delimited by the connection's end.
        self._complete(self._parser.should_keep_alive())

    def _complete(self, reusable: bool) -> None:
        raw = self._raw
        body = self._body
        self.reusable = reusable
        assert self._waiter is not None
        self._waiter.set_result(
            Response(
                self._parser.get_status_code(),
                _final_head(raw[0] if len(raw) == 1 else b"".join(raw)),
                body[0] if len(body) == 1 else b"".join(body),
            )
        )


class Http1Pool:
    """Keep-alive connections per (scheme, host, port); one request per connection at a time.

    A pool belongs to the event loop that runs its first request.

    Idle connections are reused most-recent first, never when older than
    `idle_seconds` or already closed by the peer; at most `max_idle_per_host` are
    kept per host (the oldest surplus is closed).
    """

    def __init__(
        self,
        *,
        max_idle_per_host: int = 64,
        idle_seconds: float = 15.0,
        max_body_bytes: int | None = None,
        ssl_context_factory: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    ) -> None:
        if max_idle_per_host < 0:
            raise ValueError("max_idle_per_host must be >= 0")
        self._max_idle = max_idle_per_host
        self._idle_seconds = idle_seconds
        self._max_body = max_body_bytes
        self._ssl_context_factory = ssl_context_factory
        self._ssl_context: ssl.SSLContext | None = None
        self._targets: dict[str, _Target] = {}
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[_Target, bytes]] = {}
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._in_flight: set[_Connection] = set()  # requests with a deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = _NEVER
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> Response:
        """Send one request and read its whole answer.

        Raises ValueError for a bad URL, method or header (nothing sent), ConnectFailed,
        Disconnected, BodyTooLarge, InvalidResponse (all Http1Error), or TimeoutError
        when the whole exchange (connect included) takes longer than `timeout` seconds.
        """
        if self._closed:
            raise Http1Error("the HTTP connection pool is closed")
        target, data = self._encode(method, url, body, headers)
        loop = self._running_loop()
        now = loop.time()
        deadline = None if timeout is None else now + timeout
        connection = self._take_idle(target.key, now)
        if connection is None:
            connection = await self._connect_by(target, loop, deadline, timeout)
        waiter = connection.send(data, method == "HEAD", loop)
        if timeout is not None and deadline is not None:
            # Not asyncio.timeout() nor a timer per call: on uvloop, arming and
            # cancelling a timer per request costs ~8-15 us of CPU (an extra loop
            # turn to close the timer), a quarter of the whole call. One pool timer,
            # set for the earliest deadline, times out whatever is overdue instead.
            connection.deadline = deadline
            connection.timeout = timeout
            self._in_flight.add(connection)
            if deadline < self._timer_when:
                self._arm_timer(loop, deadline)
        try:
            response = await waiter
        except BaseException:
            # Timeout, cancellation or an error: the connection's state is unknown.
            connection.abort()
            raise
        finally:
            self._in_flight.discard(connection)
        if connection.reusable and not self._closed and connection.is_usable():
            self._park(connection, loop)
        else:
            connection.close()
        return response

    async def stream(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        read_timeout: float,
        total_timeout: float | None = None,
        connect_timeout: float = 10.0,
    ) -> StreamedAnswer:
        """Send one request and return once the answer's head is in; read its body with
        `StreamedAnswer.read()` and always `release()` it.

        `read_timeout` bounds each wait for bytes (the head included), `total_timeout` the whole
        exchange. Raises as `request` does (TimeoutError when a bound runs out; no retry)."""
        if self._closed:
            raise Http1Error("the HTTP connection pool is closed")
        target, data = self._encode(method, url, body, headers)
        loop = self._running_loop()
        now = loop.time()
        deadline = _NEVER if total_timeout is None else now + total_timeout
        connection = self._take_idle(target.key, now)
        if connection is None:
            bound = min(connect_timeout, total_timeout if total_timeout is not None else _NEVER)
            connection = await self._connect_by(target, loop, now + bound, bound)
        answer = StreamedAnswer(self, connection, loop, read_timeout, deadline)
        answer.send(data)
        try:
            await answer.wait_head()
        except BaseException:
            answer.release()
            raise
        return answer

    def _encode(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[_Target, bytes]:
        """The request's target and its bytes on the wire."""
        # The request head up to its Content-Length depends only on these: build,
        # check and encode it once (the node sends the same few heads over and over).
        cache_key = (method, url, tuple(headers.items()))
        cached = self._heads.get(cache_key)
        if cached is None:
            cached = self._head(method, url, headers, cache_key)
        target, head = cached
        if body or method not in _BODYLESS_METHODS:
            return target, b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body)
        return target, head + b"\r\n"

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            # A pool belongs to one event loop (like its connections). Cached: in 3.11
            # get_running_loop() costs a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def _connect_by(
        self, target: _Target, loop: asyncio.AbstractEventLoop, deadline: float | None, timeout: float | None
    ) -> _Connection:
        # Connecting is rare (keep-alive): asyncio.timeout's cost is fine here.
        try:
            async with asyncio.timeout_at(deadline):
                return await self._connect(target, loop)
        except TimeoutError:  # asyncio.timeout's, message-less (_connect turns OSErrors into ConnectFailed)
            raise TimeoutError(f"could not connect to {target.where} within {timeout:g}s") from None

    def _give_back(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        """A borrowed connection whose answer was read to its end."""
        if connection.reusable and not self._closed and connection.is_usable():
            self._park(connection, loop)
        else:
            connection.close()

    def _head(
        self, method: str, url: str, headers: Mapping[str, str], cache_key: tuple[str, str, tuple[tuple[str, str], ...]]
    ) -> tuple[_Target, bytes]:
        """Check and encode a request head, all but its Content-Length and the blank line."""
        if not _is_token(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        target = self._targets.get(url)
        if target is None:
            target = _parse_target(url)
            if len(self._targets) >= _MAX_CACHED:
                self._targets.clear()  # URLs with varying query strings: keep the cache bounded
            self._targets[url] = target
        head = f"{method}{target.start_line_tail}{_header_lines(headers, target.host_header)}"
        cached = (target, head.encode())
        if len(self._heads) >= _MAX_CACHED:
            self._heads.clear()
        self._heads[cache_key] = cached
        return cached

    def idle_connections(self) -> int:
        """How many open idle connections the pool holds (all hosts)."""
        return sum(1 for idle in self._idle.values() for connection in idle if connection.is_usable())

    async def close(self) -> None:
        """Close every connection, idle or in use; later requests raise Http1Error."""
        self._closed = True
        for handle in (self._sweep_handle, self._timer):
            if handle is not None:
                handle.cancel()
        self._sweep_handle = self._timer = None
        self._timer_when = _NEVER
        self._in_flight.clear()
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._open):
            connection.fail(Http1Error("the HTTP connection pool was closed during the request"))
        self._open.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost

    # -- internals -------------------------------------------------------------

    def _take_idle(self, key: tuple[str, str, int], now: float) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_allowed = now - self._idle_seconds
        while idle:
            connection = idle.pop()  # most recent first: the likeliest to be alive
            if (
                connection.idle_since >= oldest_allowed
                and connection.is_usable()
                and (now - connection.idle_since < _CHECK_AFTER_IDLE or connection.is_quiet())
            ):
                return connection
            # Closed by the peer while idle, or too old: skip it (nothing was sent on it).
            connection.close()
        return None

    async def _connect(self, target: _Target, loop: asyncio.AbstractEventLoop) -> _Connection:
        connection = _Connection(target, self._max_body, self._open)
        context: ssl.SSLContext | None = None
        if target.tls:
            context = self._ssl_context
            if context is None:
                context = self._ssl_context = self._ssl_context_factory()
        try:
            await loop.create_connection(
                lambda: connection,
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        except OSError as error:  # refused, unreachable, DNS, TLS handshake
            raise ConnectFailed(f"could not connect to {target.where}: {_describe_os_error(error)}") from error
        if self._closed:
            connection.close()
            raise Http1Error("the HTTP connection pool is closed")
        return connection

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._time_out_overdue)
        self._timer_when = when

    def _time_out_overdue(self) -> None:
        self._timer = None
        self._timer_when = _NEVER
        loop = self._loop
        if loop is None or not self._in_flight:
            return
        # A timer may fire a hair early (uvloop rounds to milliseconds): allow for it,
        # or it would re-arm for the same deadline over and over.
        now = loop.time() + 0.001
        earliest = _NEVER
        for connection in list(self._in_flight):
            if connection.deadline <= now:
                self._in_flight.discard(connection)
                connection.time_out(connection.timeout)
            elif connection.deadline < earliest:
                earliest = connection.deadline
        if earliest < _NEVER:
            self._arm_timer(loop, earliest)

    def _park(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        connection.park(now)
        idle = self._idle.get(connection.target.key)
        if idle is None:
            idle = self._idle[connection.target.key] = deque()
        idle.append(connection)
        while len(idle) > self._max_idle:
            idle.popleft().close()  # the least recently used goes first
        if self._sweep_handle is None and idle:
            self._sweep_handle = loop.call_at(now + self._idle_seconds, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past `idle_seconds`, so they do not linger with no traffic."""
        self._sweep_handle = None
        loop = self._loop
        if loop is None or self._closed:
            return
        now = loop.time() + 0.001  # timers may fire a hair early: see _time_out_overdue
        oldest_allowed = now - self._idle_seconds
        next_expiry: float | None = None
        for key, idle in list(self._idle.items()):
            kept: deque[_Connection] = deque()
            for connection in idle:
                if connection.idle_since >= oldest_allowed and connection.is_usable():
                    kept.append(connection)
                else:
                    connection.close()
            if kept:
                self._idle[key] = kept
                expiry = kept[0].idle_since + self._idle_seconds
                next_expiry = expiry if next_expiry is None else min(next_expiry, expiry)
            else:
                del self._idle[key]
        if next_expiry is not None:
            self._sweep_handle = loop.call_at(next_expiry, self._sweep)


# A streamed answer's reader falls behind: stop reading the socket past this many bytes.
_STREAM_HIGH_WATER = 256 * 1024


class StreamedAnswer(asyncio.Protocol):
    """An answer whose body is read as it arrives (Http1Pool.stream).

    It reads the borrowed connection itself (the transport's protocol for the while) and
    gives it back to its pool on `release()` only when the body was read to its end over a
    keep-alive connection; otherwise the connection is closed.
    """

    def __init__(
        self,
        pool: Http1Pool,
        connection: _Connection,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        deadline: float,
    ) -> None:
        self.status = 0
        self.head = b""
        self._pool = pool
        self._connection = connection
        self._loop = loop
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._parser = httptools.HttpResponseParser(self)
        self._raw: list[bytes] = []
        self._headers_done = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._reusable = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # -- the caller's side ---------------------------------------------------

    def send(self, data: bytes) -> None:
        transport = self._connection.transport
        assert transport is not None
        transport.set_protocol(self)
        self._connection.stream = self
        transport.write(data)

    async def wait_head(self) -> None:
        while not self._headers_done:
            await self._wait()

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), decoded as latin-1, or None."""
        return Response(self.status, self.head, b"").header(name)

    async def read(self) -> bytes:
        """The body's next bytes as they arrived; b"" at its end. Raises TimeoutError when
        nothing came within the read timeout (or the whole exchange's ran out), and
        Disconnected or InvalidResponse when the answer broke off."""
        while not self._chunks:
            if self._complete:
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < _STREAM_HIGH_WATER // 2:
            self._paused = False
            transport = self._connection.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        return chunk

    async def read_at_most(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (an error answer's explanation), whatever arrived before
        the body ended or broke off."""
        body = bytearray()
        try:
            while len(body) < limit:
                chunk = await self.read()
                if not chunk:
                    break
                body += chunk
        except (Http1Error, TimeoutError):
            pass
        return bytes(body[:limit])

    def release(self) -> None:
        """Done with the answer: the connection goes back to the pool if the body was read to its
        end, else it is closed (nothing half-read is ever reused)."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        connection.stream = None
        transport = connection.transport
        if self._complete and self._error is None and not self._chunks and transport is not None:
            connection.reusable = self._reusable
            transport.set_protocol(connection)
            self._pool._give_back(connection, self._loop)
        else:
            if transport is not None:
                transport.set_protocol(connection)
            connection.abort()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        now = self._loop.time()
        when = min(now + self._read_timeout, self._deadline)
        self._waiter = waiter = self._loop.create_future()
        timer = self._loop.call_at(when, self._time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError(f"the service at {self._connection.target.where} sent nothing in time"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: Http1Error) -> None:
        """Break the answer off with `error` (the first reason given is the one read)."""
        if self._error is None and not self._complete:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # -- asyncio.Protocol (the borrowed transport's) ------------------------------

    def data_received(self, data: bytes) -> None:
        if self._complete or self._error is not None:
            self._reusable = False  # bytes after the answer: this connection's framing is off
            return
        if not self._headers_done:
            self._raw.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(InvalidResponse(f"the service at {self._connection.target.where} switched protocols"))
        except httptools.HttpParserError as error:
            reason = str(error) or type(error).__name__
            self.fail(
                InvalidResponse(f"the service at {self._connection.target.where} sent an invalid HTTP answer: {reason}")
            )

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        self._connection.connection_lost(exc)  # the pool's bookkeeping (its waiter is idle)

    def _ended(self, exc: Exception | None) -> None:
        self._connection.closed = True
        if self._complete:
            return
        if self._headers_done:
            if _framing(self.head) == (None, False):
                self._complete = True  # a body delimited by the connection's end
                self._wake()
                return
            what = "in the middle of its answer"
        else:
            what = "before answering"
        suffix = f" ({_describe_os_error(exc)})" if exc is not None else ""
        self.fail(Disconnected(f"the service at {self._connection.target.where} closed the connection {what}{suffix}"))

    # -- httptools callbacks -------------------------------------------------

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real head follows
        self.status = status
        self.head = _final_head(b"".join(self._raw))
        self._raw = []
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if not self._paused and self._buffered > _STREAM_HIGH_WATER:
            self._paused = True
            transport = self._connection.transport
            if transport is not None:
                transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return
        self._complete = True
        self._reusable = self._parser.should_keep_alive()
        self._wake()
