"""The /v1 benchmark (issue 12): the node's OpenAI-compatible API next to the container called directly.

    .venv/bin/python bench/v1.py            # full run, ~6 minutes
    .venv/bin/python bench/v1.py --quick    # ~3 minutes
    make bench-v1                           # the first line, after scripts/setup-venv.sh

Four loads, each printed as a ratio against a baseline measured in the same run
(bench/README.md, "/v1" explains each figure and lists the latest ones):

1. ttft      time to first token, streamed, through /v1 vs straight from the llm container;
2. speed     decode tokens/s through /v1 vs straight from the container (same prompts, temperature 0);
3. overhead  /v1/chat/completions vs calling the trivial chat service directly, whole and streamed;
4. memory    the node's VmRSS after 1,000 and after 10,000 streamed /v1 requests.

The real model runs in Docker (infernet-local/llm:latest, host networking, one thread)
pinned to core 1. The node runs pinned to core 0. For loads 1 and 2 the bench process
(client, and the tap below) runs on core 0 next to the node: it is idle while the node
works, and core 1 is the model's alone. For loads 3 and 4 the client runs on core 1 and
the chat service next to the node on core 0, so that the direct call and the /v1 call cross
between cores equally often (--service-core load puts the service on the client's core).

Both paths of loads 1 and 2 go through a *tap*: a byte relay in this process, in front
of the container, that timestamps the request's arrival and every token chunk leaving
the container. The model's own time to first token varies by hundreds of ms under the
machine's load; the tap takes it out: per request, (time to first token at the client)
minus (first token leaving the container - request reaching the container) is what the
path adds. The tap's own hop is in both paths, so it cancels in the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

from client import Connection  # noqa: E402
from measure import LOAD_CPU, SERVER_CPU, Figure, Proc, Results, format_figure, percentile  # noqa: E402

from tests.support.processes import free_port, node_config  # noqa: E402

PYTHON = sys.executable
IMAGE = "infernet-local/llm:latest"
# A content chunk, as both the llm container and tests/support/chat_service.py write it
# (json.dumps' default separators); the node relays the container's line unchanged.
CONTENT = b'"delta": {"content"'
TTFT_PROMPTS = [
    "What is the capital of France?",
    "Name a colour.",
    "Say hello to a friend.",
    "What is two plus two?",
]
IDLE_S = 1.0  # the idle before each request of the "after idle" figure
SPEED_PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a bicycle works.",
    "Describe a walk through a forest in autumn.",
]


# -- timing ---------------------------------------------------------------------------


@dataclass
class Timed:
    """One streamed or whole answer, in seconds from the request's first byte."""

    status: int
    first_token: float | None  # first content chunk
    last_token: float | None
    tokens: int  # content chunks seen
    total: float  # the answer's last byte
    body: bytes


class TimedConnection(Connection):
    async def timed(self, path: str, body: bytes) -> Timed:
        """POST, read the answer (chunked or not), time the content chunks as they arrive."""
        if self._writer is None:
            await self.open()
        reader = self._reader
        assert reader is not None
        start = time.perf_counter()
        self._send("POST", path, body)
        status, headers = await self._head()
        first = last = None
        tokens = 0
        received = bytearray()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                seen = data.count(CONTENT)
                if seen:
                    last = time.perf_counter() - start
                    first = last if first is None else first
                    tokens += seen
                received += data[:-2]
        else:
            received += await reader.readexactly(int(headers.get("content-length", "0")))
        total = time.perf_counter() - start
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Timed(status, first, last, tokens, total, bytes(received))


class Tap:
    """A TCP relay in front of the container that timestamps what passes (one request at a time).

    `request_in`: the first byte of the last `POST /service_output`; `first_token`/`last_token`:
    the container's first and last content chunk after it; `tokens`: how many.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0
        self.reset()

    def reset(self) -> None:
        self.sent = 0.0  # when the client sent the request (set by the caller)
        self.request_in: float | None = None
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.tokens = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            down_w.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the bench is over
            await asyncio.gather(self._pipe(down_r, up_w, True), self._pipe(up_r, down_w, False))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._relay(reader, writer, requests)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: bool) -> None:
        try:
            while data := await reader.read(65536):
                now = time.perf_counter()
                if requests:
                    if data.startswith(b"POST /service_output"):
                        self.request_in = now
                elif self.request_in is not None:
                    seen = data.count(CONTENT)
                    if seen:
                        self.first_token = now if self.first_token is None else self.first_token
                        self.last_token = now
                        self.tokens += seen
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


# -- helpers --------------------------------------------------------------------------


def chat(prompt: str, max_tokens: int, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return body


def direct_body(data: dict[str, Any], stream: bool) -> bytes:
    return json.dumps({"source": 1, "destination": 2 if stream else 1, "data": data}).encode()


def node_body(data: dict[str, Any], stream: bool) -> bytes:
    body = {**data, "stream": True, "stream_options": {"include_usage": True}} if stream else data
    return json.dumps(body).encode()


def ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def check(timed: Timed, what: str) -> Timed:
    if timed.status != 200:
        raise SystemExit(f"{what}: HTTP {timed.status}: {timed.body[:300]!r}")
    return timed


def wait_url(url: str, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"{what} did not answer {url} within {deadline:.0f} s") from None
            time.sleep(0.2)


def cpu_pressure() -> str:
    """The share of time some runnable task waited for a CPU over the last 60 s (/proc/pressure/cpu)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"
    return some.split()[2].split("=")[1] + "%"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# -- the bench ------------------------------------------------------------------------


class V1Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="infernet-bench-v1-"))
        self.results = Results()
        self.procs: list[Proc] = []
        self.container: str | None = None
        quick = args.quick
        self.ttft_pairs = 16 if quick else 40
        self.speed_pairs = 4 if quick else 8
        self.speed_tokens = 48 if quick else 64
        self.overhead_rounds = 2 if quick else 4
        self.overhead_n = 300 if quick else 1000
        self.idle_pairs = 6 if quick else 15
        self.memory_counts = (1_000, 10_000)  # the figures, quick or not
        self.memory_clients = 4

    # -- processes

    def start_chat_service(self) -> None:
        self.chat_port = free_port()
        core = SERVER_CPU if self.args.service_core == "server" else LOAD_CPU
        proc = Proc(
            "chat-service",
            [PYTHON, str(ROOT / "tests/support/chat_service.py")],
            core,
            self.tmp / "chat-service.log",
            env={"PORT": str(self.chat_port)},
        )
        self.procs.append(proc)
        proc.wait_ready(f"http://127.0.0.1:{self.chat_port}/health")

    def start_container(self) -> None:
        self.llm_port = free_port()
        self.container = f"infernet-bench-llm-{self.llm_port}"
        command = [
            "docker",
            "run",
            "-d",
            "--rm",
            "--name",
            self.container,
            "--network",
            "host",
            "--cpuset-cpus",
            str(LOAD_CPU),
            "-e",
            "HOST=127.0.0.1",
            "-e",
            f"PORT={self.llm_port}",
            "-e",
            "N_THREADS=1",
            "-e",
            "LOG_LEVEL=WARNING",
            self.args.image,
        ]
        started = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            self.container = None
            raise SystemExit(
                f"docker run {self.args.image} failed: {started.stderr.strip()[-500:]} "
                "(scripts/provision.sh builds the image)"
            )
        wait_url(f"http://127.0.0.1:{self.llm_port}/health", 120, "the llm container")

    def start_node(self, tap_port: int | None) -> tuple[Proc, int]:
        workdir = self.tmp / "node"
        workdir.mkdir(exist_ok=True)
        port = free_port()
        containers = [{"id": "chat", "url": f"http://127.0.0.1:{self.chat_port}", "models": ["tiny"]}]
        if tap_port is not None:
            containers.append({"id": "llm", "url": f"http://127.0.0.1:{tap_port}", "models": ["smollm2"]})
        config = node_config(workdir, containers, port=port, jobs={"shutdown_grace_seconds": 0})
        (workdir / "config.json").write_text(json.dumps(config, indent=2))
        # This checkout's node (or --node-src's), whatever the venv has installed.
        env = {"PYTHONPATH": str((self.args.node_src or ROOT).resolve())}
        node = Proc(
            "node",
            [PYTHON, "-m", "node", "run", "--config", str(workdir / "config.json")],
            SERVER_CPU,
            self.tmp / "node.log",
            env=env,
            cwd=workdir,
        )
        self.procs.append(node)
        node.wait_ready(f"http://127.0.0.1:{port}/health")
        return node, port

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.container is not None:
            subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, timeout=60)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- 1 and 2: the real model

    async def model_loads(self, steps: Sequence[str]) -> None:
        os.sched_setaffinity(0, {SERVER_CPU})  # core 1 is the model's
        tap = Tap(self.llm_port)
        await tap.start()
        node, port = self.start_node(tap.port)
        direct = TimedConnection("127.0.0.1", tap.port)
        through = TimedConnection("127.0.0.1", port)

        async def one(side: str, data: dict[str, Any]) -> tuple[Timed, Tap]:
            tap.reset()
            tap.sent = time.perf_counter()
            if side == "direct":
                timed = await direct.timed("/service_output", direct_body(data, True))
            else:
                timed = await through.timed("/v1/chat/completions", node_body(data, True))
            check(timed, f"{side} stream")
            snapshot = Tap(0)
            snapshot.request_in, snapshot.first_token = tap.request_in, tap.first_token
            snapshot.last_token, snapshot.tokens = tap.last_token, tap.tokens
            snapshot.sent = tap.sent
            return timed, snapshot

        try:
            for side in ("direct", "node"):  # warm-up: connections, the model's first call
                await one(side, chat("Hello", 4, "smollm2", True))
            if "ttft" in steps:
                await self.ttft_load(one)
            if "speed" in steps:
                await self.speed_load(one)
        finally:
            await direct.close()
            await through.close()
            await tap.close()
            node.stop()
            self.procs.remove(node)
            os.sched_setaffinity(0, {LOAD_CPU})

    async def ttft_load(self, one: Any) -> None:
        print(f"== 1. time to first token, streamed: /v1 vs the llm container ({self.ttft_pairs} pairs)", flush=True)
        ttft: dict[str, list[float]] = {"direct": [], "node": []}
        path: dict[str, list[float]] = {"direct": [], "node": []}  # ttft minus the container's own
        model: dict[str, list[float]] = {"direct": [], "node": []}
        legs: dict[str, list[float]] = {"direct": [], "node": []}  # client sent -> request at the container
        for i in range(self.ttft_pairs):
            data = chat(TTFT_PROMPTS[i % len(TTFT_PROMPTS)], 2, "smollm2", True)
            for side in ("direct", "node") if i % 2 == 0 else ("node", "direct"):
                timed, seen = await one(side, data)
                assert timed.first_token is not None and seen.first_token is not None and seen.request_in
                inside = seen.first_token - seen.request_in
                ttft[side].append(timed.first_token)
                model[side].append(inside)
                path[side].append(timed.first_token - inside)
                legs[side].append(seen.request_in - seen.sent)
        d, n = ms(ttft["direct"]), ms(ttft["node"])
        pd, pn = ms(path["direct"]), ms(path["node"])
        spread = (percentile(model["direct"], 75) - percentile(model["direct"], 25)) * 1000
        self.results.add(
            Figure(
                "TTFT p50, streamed (client: request -> first token)",
                "ms",
                n,
                d,
                note=f"p50 difference {n - d:+.2f} ms; the model's own TTFT has an IQR of {spread:.1f} ms",
            ),
            Figure("the model's own TTFT p50 (at the tap)", "ms", ms(model["node"]), ms(model["direct"])),
            Figure("TTFT minus the model's own: the path, p50", "ms", pn, pd),
            Figure("TTFT added by the node, p50 (path node - path direct)", "ms", pn - pd, None),
            Figure(
                "  of which: request sent -> request at the container, p50",
                "ms",
                ms(legs["node"]),
                ms(legs["direct"]),
                note="the rest is first token at the container -> at the client",
            ),
        )
        self.results.raw["ttft"] = {"ttft": ttft, "path": path, "model": model, "request_leg": legs}
        self.results.target(
            pn - pd <= 2.0,
            f"TTFT: the node adds {pn - pd:.2f} ms at p50 over the container called directly "
            f"(target <= 2 ms; TTFT p50 {n:.1f} ms through /v1, {d:.1f} ms direct, "
            f"ratio {n / d:.3f})",
        )

    async def speed_load(self, one: Any) -> None:
        print(
            f"== 2. generation speed: /v1 vs the llm container ({self.speed_pairs} pairs, "
            f"max_tokens {self.speed_tokens}, temperature 0)",
            flush=True,
        )
        tps: dict[str, list[float]] = {"direct": [], "node": []}
        tokens: dict[str, int] = {"direct": 0, "node": 0}
        seconds: dict[str, float] = {"direct": 0.0, "node": 0.0}
        at_tap: list[float] = []
        pairs: list[float] = []
        for i in range(self.speed_pairs):
            data = chat(SPEED_PROMPTS[i % len(SPEED_PROMPTS)], self.speed_tokens, "smollm2", True)
            got: dict[str, float] = {}
            for side in ("direct", "node") if i % 2 == 0 else ("node", "direct"):
                timed, seen = await one(side, data)
                assert timed.first_token is not None and timed.last_token is not None
                span = timed.last_token - timed.first_token
                if timed.tokens < 2 or span <= 0:
                    raise SystemExit(f"{side}: too few tokens to time ({timed.tokens})")
                got[side] = (timed.tokens - 1) / span
                tps[side].append(got[side])
                tokens[side] += timed.tokens - 1
                seconds[side] += span
                if side == "node" and seen.first_token is not None and seen.last_token is not None:
                    at_tap.append(got[side] / ((seen.tokens - 1) / (seen.last_token - seen.first_token)))
            pairs.append(got["node"] / got["direct"])
        rate = {side: tokens[side] / seconds[side] for side in tokens}
        ratio = rate["node"] / rate["direct"]
        self.results.add(
            Figure(
                "decode tokens/s (all runs: tokens / decode time)",
                "tok/s",
                rate["node"],
                rate["direct"],
                note=f"{tokens['node']} tokens each side",
            ),
            Figure(
                "decode tokens/s, median run",
                "tok/s",
                statistics.median(tps["node"]),
                statistics.median(tps["direct"]),
                note=f"median of pair ratios {statistics.median(pairs):.3f}",
            ),
            Figure(
                "same /v1 request: tokens/s at the client / at the tap",
                "x",
                statistics.median(at_tap),
                None,
                note="what the relay alone does to the pace",
            ),
        )
        self.results.raw["speed"] = {"tps": tps, "pairs": pairs, "at_tap": at_tap}
        self.results.target(
            ratio >= 0.97,
            f"generation speed: {ratio:.3f} x direct through /v1 ({rate['node']:.1f} vs "
            f"{rate['direct']:.1f} tokens/s; target >= 0.97)",
        )

    # -- 3: overhead over the trivial chat service

    async def overhead_load(self, node: Proc, port: int) -> None:
        print(
            f"== 3. /v1 overhead over the trivial chat service ({self.overhead_rounds} rounds x "
            f"{self.overhead_n} requests per side and mode)",
            flush=True,
        )
        data = chat("hello there", 16, "tiny", False)
        lat: dict[str, list[float]] = {key: [] for key in ("direct", "node", "direct-s", "node-s")}
        first: dict[str, list[float]] = {"direct-s": [], "node-s": []}
        cpu: dict[str, float] = {"node": 0.0, "node-s": 0.0}
        targets = {
            "direct": (self.chat_port, "/service_output", direct_body(data, False)),
            "node": (port, "/v1/chat/completions", node_body(data, False)),
            "direct-s": (self.chat_port, "/service_output", direct_body(data, True)),
            "node-s": (port, "/v1/chat/completions", node_body(data, True)),
        }
        # Node and direct alternate request by request (in a shuffled order), as in the TTFT load and
        # bench/auth_overhead.py: the host's faster and slower spells fall on both sides alike. The
        # node is idle during the direct calls, so its CPU over a phase is its CPU for that phase's calls.
        for warm in (True,) + (False,) * self.overhead_rounds:
            for pair in (("direct", "node"), ("direct-s", "node-s")):
                connections = {key: TimedConnection("127.0.0.1", targets[key][0]) for key in pair}
                cpu_before = node.cpu_seconds()
                try:
                    for _ in range(50 if warm else self.overhead_n):
                        for key in random.sample(pair, 2):
                            _, path, body = targets[key]
                            timed = check(await connections[key].timed(path, body), key)
                            if not warm:
                                lat[key].append(timed.total)
                                if key in first:
                                    assert timed.first_token is not None
                                    first[key].append(timed.first_token)
                finally:
                    for connection in connections.values():
                        await connection.close()
                if not warm:
                    cpu[pair[1]] += node.cpu_seconds() - cpu_before
        p50 = {key: ms(values) for key, values in lat.items()}
        p99 = {key: percentile(values, 99) * 1000 for key, values in lat.items()}
        f50 = {key: ms(values) for key, values in first.items()}
        whole, streamed = p50["node"] - p50["direct"], p50["node-s"] - p50["direct-s"]
        first_added = f50["node-s"] - f50["direct-s"]
        self.results.add(
            Figure(
                "whole answer p50 (/v1 vs /service_output)",
                "ms",
                p50["node"],
                p50["direct"],
                note=f"p99 {p99['node']:.3f} vs {p99['direct']:.3f} ms",
            ),
            Figure("added by the node, whole answer, p50", "ms", whole, None),
            Figure(
                "stream, to the last byte, p50",
                "ms",
                p50["node-s"],
                p50["direct-s"],
                note=f"p99 {p99['node-s']:.3f} vs {p99['direct-s']:.3f} ms",
            ),
            Figure("added by the node, stream to the last byte, p50", "ms", streamed, None),
            Figure("stream, to the first token, p50", "ms", f50["node-s"], f50["direct-s"]),
            Figure("added by the node, stream to the first token, p50", "ms", first_added, None),
            Figure(
                "node CPU per /v1 call, whole / streamed (all threads)",
                "us",
                cpu["node"] / len(lat["node"]) * 1e6,
                None,
                note=f"streamed {cpu['node-s'] / len(lat['node-s']) * 1e6:.0f} us; clock ticks of 10 ms, "
                "so a sum over the rounds",
            ),
        )
        idle = await self._after_idle(targets["direct-s"], targets["node-s"])
        self.results.add(
            Figure(
                f"stream, to the first token, after {IDLE_S:g} s idle, p50",
                "ms",
                idle["node-s"],
                idle["direct-s"],
                note=f"added {idle['node-s'] - idle['direct-s']:.3f} ms; {self.idle_pairs} pairs, "
                "as the model load sees it (the node waits while the model generates)",
            ),
        )
        self.results.raw["overhead"] = {"p50": p50, "p99": p99, "first_p50": f50, "after_idle_p50": idle}
        self.results.target(
            whole <= 1.0,
            f"node overhead: /v1 adds {whole:.3f} ms at p50 to a whole answer (target <= 1 ms; "
            f"ratio {p50['node'] / p50['direct']:.2f}); streamed, {streamed:.3f} ms to the last "
            f"byte and {first_added:.3f} ms to the first token",
        )

    async def _after_idle(self, *targets: tuple[int, str, bytes]) -> dict[str, float]:
        """First streamed token when the server was idle for IDLE_S before the request."""
        firsts: dict[str, list[float]] = {"direct-s": [], "node-s": []}
        connections = [TimedConnection("127.0.0.1", port) for port, _, _ in targets]
        try:
            for _ in range(self.idle_pairs):
                for key, connection, (_, path, body) in zip(firsts, connections, targets, strict=True):
                    await asyncio.sleep(IDLE_S)
                    timed = check(await connection.timed(path, body), key)
                    assert timed.first_token is not None
                    firsts[key].append(timed.first_token)
        finally:
            for connection in connections:
                await connection.close()
        return {key: ms(values) for key, values in firsts.items()}

    # -- 4: memory

    async def memory_load(self, node: Proc, port: int) -> None:
        low, high = self.memory_counts
        print(
            f"== 4. memory: VmRSS after {low:,} and {high:,} streamed /v1 requests ({self.memory_clients} clients)",
            flush=True,
        )
        body = node_body(chat("hello there, how are you today?", 16, "tiny", False), True)
        done = 0
        rss: dict[int, float] = {0: rss_mib(node.pid)}
        started = time.perf_counter()

        async def client(quota: int) -> None:
            nonlocal done
            connection = TimedConnection("127.0.0.1", port)
            try:
                for _ in range(quota):
                    timed = check(await connection.timed("/v1/chat/completions", body), "memory stream")
                    if timed.tokens < 1 or not timed.body.endswith(b"data: [DONE]\n\n"):
                        raise SystemExit(f"memory stream: an incomplete stream: {timed.body[-200:]!r}")
                    done += 1
            finally:
                await connection.close()

        previous = 0
        for count in (low, high):
            share = count - previous
            quotas = [
                share // self.memory_clients + (1 if i < share % self.memory_clients else 0)
                for i in range(self.memory_clients)
            ]
            await asyncio.gather(*(client(quota) for quota in quotas))
            previous = count
            await asyncio.sleep(0.5)  # let the node finish its last jobs' writes
            rss[count] = rss_mib(node.pid)
            print(
                f"   {done:,} streams done in {time.perf_counter() - started:.0f} s: VmRSS {rss[count]:.1f} MiB",
                flush=True,
            )
        change = (rss[high] - rss[low]) / rss[low]
        self.results.add(
            Figure(
                f"node VmRSS after {high:,} / after {low:,} streamed requests",
                "MiB",
                rss[high],
                rss[low],
                note=f"{change:+.1%}; at start {rss[0]:.1f} MiB",
            ),
        )
        self.results.raw["memory"] = rss
        self.results.target(
            abs(change) <= 0.10,
            f"memory: VmRSS {rss[low]:.1f} MiB after {low:,} streamed requests, {rss[high]:.1f} MiB "
            f"after {high:,} ({change:+.1%}; target within 10%)",
        )

    async def chat_loads(self, steps: Sequence[str]) -> None:
        node, port = self.start_node(None)
        try:
            if "overhead" in steps:
                await self.overhead_load(node, port)
            if "memory" in steps:
                await self.memory_load(node, port)
        finally:
            node.stop()
            self.procs.remove(node)

    def run(self) -> Results:
        steps = self.args.only or ("ttft", "speed", "overhead", "memory")
        print(
            f"bench/v1: work dir {self.tmp}; node on core {SERVER_CPU}; load average "
            f"{os.getloadavg()[0]:.2f}; CPU pressure {cpu_pressure()} (avg60)",
            flush=True,
        )
        self.start_chat_service()
        if "ttft" in steps or "speed" in steps:
            self.start_container()
            asyncio.run(self.model_loads(steps))
        if "overhead" in steps or "memory" in steps:
            asyncio.run(self.chat_loads(steps))
        return self.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (~2 minutes)")
    parser.add_argument(
        "--only",
        action="append",
        choices=("ttft", "speed", "overhead", "memory"),
        help="run only these loads (repeatable)",
    )
    parser.add_argument("--image", default=IMAGE, help=f"the llm image (default {IMAGE})")
    parser.add_argument(
        "--service-core",
        choices=("server", "load"),
        default="server",
        help="where the trivial chat service runs: next to the node (default) or the client",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="scheduling priority of the bench and the node when run as root (default -10; 0: off)",
    )
    parser.add_argument("--node-src", type=Path, help="run the node from this source checkout instead")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, store)")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        sys.exit("the benchmark needs 2 cores: the node on one, the model or the load on the other")
    os.sched_setaffinity(0, {LOAD_CPU})
    if args.nice and os.geteuid() == 0:
        # Other sessions' processes share both cores: a higher priority for this process and
        # its children (the node, the chat service; not the container) keeps their wake-ups
        # from queueing behind them. Both sides of every comparison get it.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    bench = V1Bench(args)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    pressure_before = cpu_pressure()
    try:
        results = bench.run()
    finally:
        bench.close()
    print(
        f"\n== summary ({time.monotonic() - started:.0f} s; ratio = node / direct; load average "
        f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; CPU pressure {pressure_before} "
        f"at the start, {cpu_pressure()} at the end: other sessions' processes waiting for a core)"
    )
    for figure in results.figures:
        print(format_figure(figure).replace("ceiling", " direct"))
    print("\ntargets:")
    for line in results.targets:
        print("  " + line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "figures": [{**figure.__dict__, "ratio": figure.ratio} for figure in results.figures],
                    "targets": results.targets,
                    "raw": results.raw,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
