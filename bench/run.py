"""The node's benchmark: one command, everything it needs started here.

    .venv/bin/python bench/run.py            # full run, ~10 minutes
    .venv/bin/python bench/run.py --quick    # ~2 minutes

Servers under test (the node, and the bare aiohttp ceiling of bench/ceiling.py)
run pinned to core 0; the load generators (wrk, and this process for the latency
loads) and the services (hello-world, the park sink) run on core 1. Every figure
is printed next to the ceiling's figure from the same run, as a ratio.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

from client import Connection  # noqa: E402
from seed import seed  # noqa: E402
from node.api.jobs import STREAM_ID_GAP_SECONDS  # noqa: E402
from tests.support.processes import free_port, node_config, wait_http  # noqa: E402

PYTHON = sys.executable
SERVER_CPU = 0
LOAD_CPU = 1
HELLO = {"containers": ["hello-world"], "data": {"prompt": "hello"}}
STREAM_TEXT = "hello world from the node benchmark"


# -- processes ---------------------------------------------------------------


def _pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Proc:
    """A child process pinned to one core, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], cpu: int | None, log: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as sink:
            self.popen = subprocess.Popen(
                list(argv), stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                env={**os.environ, **(env or {})}, preexec_fn=_pin(cpu),
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, url: str, deadline: float = 60.0) -> None:
        try:
            wait_http(url, deadline, self.popen)
        except Exception:
            self.stop()
            sys.exit(f"{self.name} did not start; its log ({self.log}):\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def memory(self) -> dict[str, float]:
        """VmHWM (peak resident) and VmRSS, in MiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024
        return values


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Busy share of each pinned core over an interval, from /proc/stat."""

    @staticmethod
    def _sample() -> dict[str, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if re.match(r"cpu\d+ ", line):
                name, *fields = line.split()
                values = [int(v) for v in fields]
                idle = values[3] + values[4]
                out[name] = (sum(values[:8]), idle)
        return out

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.process_cpu = 0.0

    def __enter__(self) -> "CpuMeter":
        self.start = self._sample()
        self.start_process = cpu_seconds(self.pid) if self.pid else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid:
            self.process_cpu = cpu_seconds(self.pid) - self.start_process
        end = self._sample()
        self.busy = {}
        for name, (total, idle) in end.items():
            d_total = total - self.start[name][0]
            d_idle = idle - self.start[name][1]
            self.busy[name] = 1 - d_idle / d_total if d_total else 0.0

    def summary(self) -> dict[str, float]:
        return {"server_core": self.busy.get(f"cpu{SERVER_CPU}", 0.0), "load_core": self.busy.get(f"cpu{LOAD_CPU}", 0.0)}


# -- measurements --------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity for the node and for the ceiling."""

    name: str
    unit: str
    node: float | None
    ceiling: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.node is None or not self.ceiling:
            return None
        return self.node / self.ceiling


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, *figures: Figure) -> None:
        for figure in figures:
            self.figures.append(figure)
            print("   " + format_figure(figure), flush=True)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit in ("req/s", "jobs/s"):
        return f"{value:,.0f} {unit}"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "us":
        return f"{value:,.0f} us"
    return f"{value:,.0f} {unit}".strip()


def format_figure(figure: Figure) -> str:
    ratio = f"{figure.ratio:6.2f}" if figure.ratio is not None else "     -"
    return (f"{figure.name:<46} node {format_value(figure.node, figure.unit):>16}   "
            f"ceiling {format_value(figure.ceiling, figure.unit):>16}   ratio {ratio}"
            + (f"   {figure.note}" if figure.note else ""))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, script: Path, args: Sequence[str], seconds: float, connections: int,
        pid: int | None = None) -> dict[str, Any]:
    """Run wrk (one thread, on the load core) and parse what it prints."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
               "-s", str(script), url]
    if args:
        command += ["--", *args]
    with CpuMeter(pid) as cpu:
        output = subprocess.run(command, capture_output=True, text=True, check=True,
                                preexec_fn=_pin(LOAD_CPU)).stdout
    result: dict[str, Any] = {"cpu": cpu.summary(), "output": output, "process_cpu": cpu.process_cpu}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    assert total, output
    result["requests"] = int(total.group(1))
    result["seconds"] = _ms(total.group(2)) / 1000
    result["accepted_rps"] = result["requests"] / result["seconds"]  # 2xx only, below
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["accepted_rps"] = (result["requests"] - result["non2xx"]) / result["seconds"]
    errors = re.search(r"Socket errors: (.*)", output)
    result["socket_errors"] = errors.group(1) if errors else ""
    for q in ("50", "99"):
        match = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{q}"] = _ms(match.group(1)) if match else None
    found = re.search(r"not-found: (\d+)", output)
    result["not_found"] = int(found.group(1)) if found else None
    result["cpu_us"] = result["process_cpu"] / result["requests"] * 1e6 if pid and result["requests"] else None
    return result


def generator_bound(cpu: dict[str, float]) -> bool:
    return cpu["load_core"] > 0.9 and cpu["server_core"] < 0.9


def cpu_note(name: str, cpu: dict[str, float]) -> str:
    flag = "  <-- GENERATOR-BOUND" if generator_bound(cpu) else ""
    return f"{name}: server core {cpu['server_core']:.0%} busy, load core {cpu['load_core']:.0%}{flag}"


async def _timed(n: int, once: Callable[[], Any]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await once()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def direct_calls(port: int, n: int) -> list[float]:
    """Latency (ms) of POST /service_output straight to the service."""
    body = json.dumps({"source": 1, "destination": 1, "data": HELLO["data"], "requires_proof": False}).encode()
    conn = await Connection("127.0.0.1", port).open()

    async def once() -> None:
        reply = await conn.request("POST", "/service_output", body)
        assert reply.status == 200, reply

    await _timed(max(50, n // 10), once)
    try:
        return await _timed(n, once)
    finally:
        await conn.close()


async def job_once(conn: Connection, body: bytes, poll_s: float) -> int:
    """POST a job and poll GET until it finished; returns the number of GETs."""
    reply = await conn.request("POST", "/api/jobs", body)
    assert reply.status == 200, reply
    job_id = reply.json()["id"]
    polls = 0
    while True:
        if poll_s:
            await asyncio.sleep(poll_s)
        polls += 1
        found = (await conn.request("GET", f"/api/jobs?id={job_id}")).json()
        if found and found[0]["status"] != "running":
            assert found[0]["status"] == "success", found
            return polls


async def job_latency(port: int, n: int) -> tuple[list[float], float]:
    """End-to-end latency (ms) of one job at a time: POST, then GET at once until it finished."""
    body = json.dumps(HELLO).encode()
    conn = await Connection("127.0.0.1", port).open()
    polls: list[int] = []

    async def once() -> None:
        polls.append(await job_once(conn, body, 0))

    await _timed(max(50, n // 10), once)
    polls.clear()
    try:
        return await _timed(n, once), statistics.mean(polls)
    finally:
        await conn.close()


async def job_throughput(port: int, seconds: float, concurrency: int, poll_s: float) -> tuple[float, int]:
    """Jobs completed per second by `concurrency` clients that each submit one job and poll it."""
    body = json.dumps(HELLO).encode()
    done = 0
    counting = False
    stop_at = 0.0

    async def client() -> None:
        nonlocal done
        conn = await Connection("127.0.0.1", port).open()
        try:
            while time.monotonic() < stop_at:
                await job_once(conn, body, poll_s)
                if counting:
                    done += 1
        finally:
            await conn.close()

    stop_at = time.monotonic() + 1.0 + seconds
    tasks = [asyncio.ensure_future(client()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)  # warm-up
    counting = True
    started = time.monotonic()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.monotonic() - started
    completed = done
    await asyncio.gather(*tasks)
    return completed / elapsed, completed


async def stream_ttfb(port: int, n: int, direct: bool) -> dict[str, list[float]]:
    """Time (ms) to the first body byte, and to the first output byte after the id line."""
    if direct:
        path = "/service_output"
        body = json.dumps({"source": 1, "destination": 2, "data": {"prompt": STREAM_TEXT}}).encode()
    else:
        path = "/api/jobs/stream"
        body = json.dumps({"containers": ["hello-world"], "data": {"prompt": STREAM_TEXT}}).encode()
    conn = await Connection("127.0.0.1", port).open()
    out: dict[str, list[float]] = {"first_byte": [], "first_output": []}
    try:
        for index in range(n + max(20, n // 10)):
            timing = await conn.stream(path, body, id_line=not direct)
            assert timing.status == 200, timing
            if not direct:
                text = timing.body.decode()
                assert text.split("\n", 1)[1] == STREAM_TEXT, text
            if index >= max(20, n // 10):
                out["first_byte"].append(timing.first_byte * 1000)
                if timing.first_output is not None:
                    out["first_output"].append(timing.first_output * 1000)
    finally:
        await conn.close()
    return out


async def stored_count(port: int, ids: Sequence[str]) -> int:
    """How many of `ids` the node returns (GET /api/jobs?id=... in batches)."""
    conn = await Connection("127.0.0.1", port).open()
    found = 0
    try:
        for start in range(0, len(ids), 50):
            batch = ids[start:start + 50]
            query = "&".join(f"id={job_id}" for job_id in batch)
            reply = await conn.request("GET", f"/api/jobs?{query}")
            assert reply.status == 200, reply
            found += len(reply.json())
    finally:
        await conn.close()
    return found


# -- the run -------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="infernet-bench-"))
        self.results = Results()
        self.procs: list[Proc] = []
        self.wrk_s = 3.0 if self.quick else 10.0
        self.warm_s = 1.0 if self.quick else 2.0
        self.latency_n = 500 if self.quick else 2000
        self.stream_n = 200 if self.quick else 1000
        self.connections = args.connections
        self.stored_big = args.stored
        self.stored_small = args.stored // 10

    # processes

    def start(self, name: str, argv: Sequence[str], cpu: int | None, health: str,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        proc = Proc(name, argv, cpu, self.tmp / f"{name}.log", env, cwd)
        self.procs.append(proc)
        proc.wait_ready(health)
        return proc

    def start_service(self) -> None:
        self.hello_port = free_port()
        self.start("hello-world", [PYTHON, str(ROOT / "containers/hello-world/app.py")], LOAD_CPU,
                   f"http://127.0.0.1:{self.hello_port}/health",
                   env={"HOST": "127.0.0.1", "PORT": str(self.hello_port), "LOG_LEVEL": "WARNING"})
        self.park_port = free_port()
        self.start("park", [PYTHON, str(BENCH / "park.py"), "--port", str(self.park_port)], LOAD_CPU,
                   f"http://127.0.0.1:{self.park_port}/health")
        self.ceiling_port = free_port()
        self.ceiling = self.start(
            "ceiling",
            [PYTHON, str(BENCH / "ceiling.py"), "--port", str(self.ceiling_port),
             "--service", f"hello-world=http://127.0.0.1:{self.hello_port}"],
            SERVER_CPU, f"http://127.0.0.1:{self.ceiling_port}/health")

    def start_node(self, label: str, db: Path | None = None) -> tuple[Proc, int]:
        workdir = self.tmp / label
        workdir.mkdir(exist_ok=True)
        port = free_port()
        config = node_config(
            workdir,
            [
                {"id": "hello-world", "url": f"http://127.0.0.1:{self.hello_port}"},
                {"id": "park", "url": f"http://127.0.0.1:{self.park_port}"},
            ],
            port=port,
            jobs={"queue_size": 100_000_000, "shutdown_grace_seconds": 0},
        )
        if db is not None:
            config["store"] = {"url": f"sqlite+aiosqlite:///{db}"}
        (workdir / "config.json").write_text(json.dumps(config, indent=2))
        node = self.start(f"node-{label}", [str(Path(PYTHON).parent / "infernet-node"), "run", "--config",
                                            str(workdir / "config.json")],
                          SERVER_CPU, f"http://127.0.0.1:{port}/health", cwd=workdir)
        return node, port

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def memory_figure(self, node: Proc, when: str) -> None:
        memory = node.memory()
        ceiling = self.ceiling.memory()
        self.results.add(Figure(f"peak memory (VmHWM) after {when}", "MiB", memory["VmHWM"], ceiling["VmHWM"],
                                higher_is_better=False, note=f"VmRSS {memory['VmRSS']:.1f} MiB"))
        self.results.raw[f"memory after {when}"] = {"node": memory, "ceiling": ceiling}

    def wrk_pair(self, what: str, script: Path, node: Proc, node_port: int, node_args: Sequence[str],
                 ceiling_args: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        wrk(f"http://127.0.0.1:{self.ceiling_port}/api/jobs", script, ceiling_args, self.warm_s, self.connections)
        ceiling = wrk(f"http://127.0.0.1:{self.ceiling_port}/api/jobs", script, ceiling_args, self.wrk_s,
                      self.connections, self.ceiling.pid)
        wrk(f"http://127.0.0.1:{node_port}/api/jobs", script, node_args, self.warm_s, self.connections)
        result = wrk(f"http://127.0.0.1:{node_port}/api/jobs", script, node_args, self.wrk_s, self.connections,
                     node.pid)
        node = result
        for label, result in (("ceiling", ceiling), ("node", node)):
            self.results.notes.append(cpu_note(f"{what} / {label}", result["cpu"]))
            if result["socket_errors"]:
                self.results.notes.append(f"{what} / {label}: socket errors {result['socket_errors']}")
        self.results.raw[what] = {"node": {k: v for k, v in node.items() if k != "output"},
                                  "ceiling": {k: v for k, v in ceiling.items() if k != "output"}}
        return node, ceiling

    # the loads

    def post_load(self) -> None:
        print("== 1. POST /api/jobs (jobs park in a never-answering service: accept path only)", flush=True)
        node, port = self.start_node("post")
        ids_file = self.tmp / "accepted-ids.txt"
        script = BENCH / "lua" / "post.lua"
        n, c = self.wrk_pair("POST /api/jobs", script, node, port, [str(ids_file), "park"], ["", "park"])
        # Every id the node answered 200 with, warm-up included.
        accepted = [json.loads(line)["id"] for line in ids_file.read_text().splitlines() if line.strip()]
        self.results.add(
            Figure("POST /api/jobs accepted/s", "req/s", n["accepted_rps"], c["accepted_rps"],
                   note=f"non-2xx {n['non2xx']}"),
            Figure("POST /api/jobs latency p50", "ms", n["p50"], c["p50"], higher_is_better=False),
            Figure("POST /api/jobs latency p99", "ms", n["p99"], c["p99"], higher_is_better=False),
            Figure("POST /api/jobs server CPU per request", "us", n["cpu_us"], c["cpu_us"], higher_is_better=False),
        )
        self.memory_figure(node, f"POST load ({len(accepted):,} queued jobs)")
        print("   SIGKILL the node, restart it, look for every accepted id", flush=True)
        node.kill()
        self.procs.remove(node)
        db = self.tmp / "post" / "node.db"
        node, port = self.start_node("post", db)
        found = asyncio.run(stored_count(port, accepted))
        line = f"durability: {found:,} of {len(accepted):,} accepted ids found after SIGKILL and restart"
        print("   " + line, flush=True)
        self.results.notes.insert(0, line)
        self.results.raw["durability"] = {"accepted": len(accepted), "found": found}
        self.stop(node)

    def job_loads(self) -> None:
        print("== 2. jobs end to end through hello-world", flush=True)
        node, port = self.start_node("e2e")
        direct = asyncio.run(direct_calls(self.hello_port, self.latency_n))
        ceiling_lat, ceiling_polls = asyncio.run(job_latency(self.ceiling_port, self.latency_n))
        node_lat, node_polls = asyncio.run(job_latency(port, self.latency_n))
        d50, d99 = percentile(direct, 50), percentile(direct, 99)
        self.results.add(
            Figure("direct service call p50 (reference)", "ms", d50, d50, higher_is_better=False),
            Figure("job latency p50 (POST + GETs until done)", "ms", percentile(node_lat, 50),
                   percentile(ceiling_lat, 50), higher_is_better=False,
                   note=f"GETs/job node {node_polls:.1f}, ceiling {ceiling_polls:.1f}"),
            Figure("job latency p99", "ms", percentile(node_lat, 99), percentile(ceiling_lat, 99),
                   higher_is_better=False),
            Figure("added over a direct call, p50", "ms", percentile(node_lat, 50) - d50,
                   percentile(ceiling_lat, 50) - d50, higher_is_better=False),
            Figure("added over a direct call, p99", "ms", percentile(node_lat, 99) - d99,
                   percentile(ceiling_lat, 99) - d99, higher_is_better=False),
        )
        concurrency, poll = self.args.job_concurrency, 0.002
        with CpuMeter(self.ceiling.pid) as cpu_c:
            ceiling_rate, ceiling_done = asyncio.run(job_throughput(self.ceiling_port, self.wrk_s, concurrency, poll))
        with CpuMeter(node.pid) as cpu_n:
            node_rate, completed = asyncio.run(job_throughput(port, self.wrk_s, concurrency, poll))
        self.results.notes.append(cpu_note("jobs completed/s / ceiling", cpu_c.summary()))
        self.results.notes.append(cpu_note("jobs completed/s / node", cpu_n.summary()))
        self.results.add(
            Figure(f"jobs completed/s ({concurrency} clients, poll {poll * 1000:g} ms)", "jobs/s", node_rate,
                   ceiling_rate),
            # The loads run 1 s longer than they count (warm-up): CPU per job is approximate.
            Figure("server CPU per completed job (approx.)", "us",
                   cpu_n.process_cpu / max(1, completed) * self.wrk_s / (self.wrk_s + 1) * 1e6,
                   cpu_c.process_cpu / max(1, ceiling_done) * self.wrk_s / (self.wrk_s + 1) * 1e6,
                   higher_is_better=False),
        )
        self.memory_figure(node, "job loads")

        print("== 4. streaming: time to first byte", flush=True)
        direct_s = asyncio.run(stream_ttfb(self.hello_port, self.stream_n, direct=True))
        ceiling_s = asyncio.run(stream_ttfb(self.ceiling_port, self.stream_n, direct=False))
        node_s = asyncio.run(stream_ttfb(port, self.stream_n, direct=False))
        d50 = percentile(direct_s["first_byte"], 50)
        self.results.add(
            Figure("direct service: first byte p50 (reference)", "ms", d50, d50, higher_is_better=False),
            Figure("stream: first byte (id line) p50", "ms", percentile(node_s["first_byte"], 50),
                   percentile(ceiling_s["first_byte"], 50), higher_is_better=False),
            Figure("stream: first output chunk p50", "ms", percentile(node_s["first_output"], 50),
                   percentile(ceiling_s["first_output"], 50), higher_is_better=False,
                   note=f"the node holds output {STREAM_ID_GAP_SECONDS * 1000:g} ms after the id line, by design"),
            Figure("stream: id line above direct first byte, p50", "ms", percentile(node_s["first_byte"], 50) - d50,
                   percentile(ceiling_s["first_byte"], 50) - d50, higher_is_better=False),
            Figure("stream: first output above direct first byte, p50", "ms",
                   percentile(node_s["first_output"], 50) - d50,
                   percentile(ceiling_s["first_output"], 50) - d50, higher_is_better=False),
            Figure("stream: first output chunk p99", "ms", percentile(node_s["first_output"], 99),
                   percentile(ceiling_s["first_output"], 99), higher_is_better=False),
        )
        self.memory_figure(node, "stream load")
        self.stop(node)

    def get_loads(self) -> None:
        print(f"== 3. GET /api/jobs?id= on a store of {self.stored_big:,} jobs (and {self.stored_small:,} for memory)",
              flush=True)
        script = BENCH / "lua" / "get.lua"
        memory = {}
        for count in (self.stored_small, self.stored_big):
            db = self.tmp / f"stored-{count}" / "node.db"
            sample = self.tmp / f"ids-{count}.txt"
            started = time.perf_counter()
            subprocess.run([PYTHON, str(BENCH / "seed.py"), str(db), str(count), "--sample", str(sample)],
                           check=True, cwd=ROOT, preexec_fn=_pin(LOAD_CPU), capture_output=True)
            print(f"   seeded {count:,} jobs in {time.perf_counter() - started:.1f}s", flush=True)
            node, port = self.start_node(f"stored-{count}", db)
            n, c = self.wrk_pair(f"GET /api/jobs?id= ({count:,} stored)", script, node, port, [str(sample)],
                                 [str(sample)])
            self.results.add(
                Figure(f"GET /api/jobs?id= req/s, {count:,} stored", "req/s", n["rps"], c["rps"],
                       note=f"not found {n['not_found']}"),
                Figure(f"GET /api/jobs?id= p50, {count:,} stored", "ms", n["p50"], c["p50"], higher_is_better=False),
                Figure(f"GET /api/jobs?id= p99, {count:,} stored", "ms", n["p99"], c["p99"], higher_is_better=False),
                Figure(f"GET /api/jobs?id= server CPU per request, {count:,} stored", "us", n["cpu_us"],
                       c["cpu_us"], higher_is_better=False),
            )
            self.memory_figure(node, f"GET load, {count:,} stored")
            memory[count] = node.memory()
            self.stop(node)
            shutil.rmtree(db.parent, ignore_errors=True)
        small, big = memory[self.stored_small]["VmHWM"], memory[self.stored_big]["VmHWM"]
        line = (f"memory: peak {small:.1f} MiB with {self.stored_small:,} stored, {big:.1f} MiB with "
                f"{self.stored_big:,} stored ({(big - small) / small:+.1%})")
        print("   " + line, flush=True)
        self.results.notes.insert(0, line)
        self.results.raw["memory by stored jobs"] = memory

    def run(self) -> Results:
        print(f"bench: work dir {self.tmp}; servers on core {SERVER_CPU}, load on core {LOAD_CPU}", flush=True)
        self.start_service()
        for step in self.args.only or ("post", "jobs", "get"):
            {"post": self.post_load, "jobs": self.job_loads, "get": self.get_loads}[step]()
        return self.results


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    print("installing wrk (apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short loads (~2 minutes)")
    parser.add_argument("--only", action="append", choices=("post", "jobs", "get"), help="run only these loads")
    parser.add_argument("--stored", type=int, default=1_000_000, help="jobs stored for the GET load (default 1M)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--job-concurrency", type=int, default=16, help="clients of the job-throughput load")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("the benchmark needs 2 cores: the server on one, the load on the other")
    ensure_wrk()
    os.sched_setaffinity(0, {LOAD_CPU})
    bench = Bench(args)
    started = time.monotonic()
    try:
        results = bench.run()
    finally:
        bench.close()
    print(f"\n== summary ({time.monotonic() - started:.0f}s; ratio = node / ceiling)")
    for figure in results.figures:
        print(format_figure(figure))
    print()
    for note in results.notes:
        print(note)
    if args.json:
        args.json.write_text(json.dumps({
            "figures": [{**figure.__dict__, "ratio": figure.ratio} for figure in results.figures],
            "notes": results.notes,
            "raw": results.raw,
        }, indent=2, default=str))


if __name__ == "__main__":
    main()
