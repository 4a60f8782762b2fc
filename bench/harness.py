"""What every bench script starts and checks: its processes, the sample services, node
processes, fresh PostgreSQL databases, wrk, and the machine it runs on.

bench/run.py, stores.py and cluster.py build on `Harness`; failover.py uses the chain tests'
own support code (tests/support/chain.py) instead, as its nodes need anvil.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from measure import LOAD_CPU, SERVER_CPU, Proc, Results, process_cpu

from tests.support.postgres import create_database_sync, drop_database_sync, start_server
from tests.support.processes import free_port, node_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable


class Harness:
    """A temporary work directory and the child processes a bench run starts (stopped by close())."""

    def __init__(self, keep: bool = False, node_src: Path | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="infernet-bench-"))
        self.keep = keep
        self.node_src = node_src
        self.procs: list[Proc] = []
        self.hello_port = 0
        self.park_port = 0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None,
        health: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        proc = Proc(name, argv, cpu, self.tmp / f"{name}.log", env, cwd)
        self.procs.append(proc)
        proc.wait_ready(health)
        return proc

    def start_services(self, cpu: int | None = LOAD_CPU) -> None:
        """hello-world (the sample echo service, a local process) and the park sink of park.py."""
        self.hello_port = free_port()
        self.start(
            "hello-world",
            [PYTHON, str(ROOT / "containers/hello-world/app.py")],
            cpu,
            f"http://127.0.0.1:{self.hello_port}/health",
            env={"HOST": "127.0.0.1", "PORT": str(self.hello_port), "LOG_LEVEL": "WARNING"},
        )
        self.park_port = free_port()
        self.start(
            "park",
            [PYTHON, str(BENCH / "park.py"), "--port", str(self.park_port)],
            cpu,
            f"http://127.0.0.1:{self.park_port}/health",
        )

    def start_node(
        self, label: str, store_url: str | None = None, cpu: int | None = SERVER_CPU, **sections: Any
    ) -> tuple[Proc, int]:
        """A node on hello-world and park (start_services first), its store under the work dir
        unless `store_url` says otherwise; `sections` are merged into its config."""
        workdir = self.tmp / label
        workdir.mkdir(exist_ok=True)
        port = free_port()
        jobs = {
            # The POST loads park every job they submit: let the queue hold them all.
            "queue_size": 100_000_000,
            "shutdown_grace_seconds": 0,
            **sections.pop("jobs", {}),
        }
        config = node_config(
            workdir,
            [
                {"id": "hello-world", "url": f"http://127.0.0.1:{self.hello_port}"},
                {"id": "park", "url": f"http://127.0.0.1:{self.park_port}"},
            ],
            port=port,
            jobs=jobs,
            **sections,
        )
        if store_url is not None:
            config["store"] = {"url": store_url}
        (workdir / "config.json").write_text(json.dumps(config, indent=2))
        # --node-src runs another checkout's node (e.g. an earlier revision) with this harness.
        env = {"PYTHONPATH": str((self.node_src or ROOT).resolve())}
        node = self.start(
            f"node-{label}",
            [PYTHON, "-m", "node", "run", "--config", str(workdir / "config.json")],
            cpu,
            f"http://127.0.0.1:{port}/health",
            env=env,
            cwd=workdir,
        )
        return node, port

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- PostgreSQL -------------------------------------------------------------------------


class Postgres:
    """The shared test server (scripts/postgres.sh, started if needed) and the databases this
    run creates on it, each dropped by close(). The server itself is never stopped."""

    def __init__(self) -> None:
        self.server = start_server()
        self.urls: list[str] = []

    def fresh_database(self) -> str:
        url = create_database_sync(self.server)
        self.urls.append(url)
        return url

    def close(self) -> None:
        for url in self.urls:
            drop_database_sync(self.server, url)
        self.urls.clear()

    def backends(self, urls: Sequence[str]) -> dict[int, str]:
        """pid -> kind of the server processes that work for these databases: their backends,
        and the server-wide helpers (WAL writer, checkpointer...; shared with other databases)."""
        names = [url.rsplit("/", 1)[1] for url in urls]
        rows = asyncio.run(_query(self.server, names))
        return {pid: ("backend" if database else "helpers") for pid, database in rows}

    def cpu(self, urls: Sequence[str]) -> dict[str, float]:
        """CPU seconds used so far by `backends(urls)`, by kind (see CpuSnapshot)."""
        totals = {"backend": 0.0, "helpers": 0.0}
        for pid, kind in self.backends(urls).items():
            try:
                totals[kind] += process_cpu(pid)
            except OSError:  # ended meanwhile
                continue
        return totals


async def _query(server: str, names: list[str]) -> list[tuple[int, str | None]]:
    import asyncpg

    connection = await asyncpg.connect(server.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch(
            "SELECT pid, datname FROM pg_stat_activity WHERE (datname = ANY($1::text[]) OR datname IS NULL) "
            "AND pid <> pg_backend_pid()",
            names,
        )
    finally:
        await connection.close()
    return [(int(row["pid"]), row["datname"]) for row in rows]


class CpuSnapshot:
    """CPU seconds of a set of processes (our nodes) and of the PostgreSQL processes serving
    given databases, between two points; a process that ended meanwhile counts until its last
    snapshot, one that started counts from zero."""

    def __init__(
        self, nodes: Mapping[str, Proc], postgres: Postgres | None = None, databases: Sequence[str] = ()
    ) -> None:
        self.nodes = dict(nodes)
        self.postgres = postgres
        self.databases = list(databases)

    def read(self) -> dict[str, float]:
        out = {name: proc.cpu_seconds() for name, proc in self.nodes.items()}
        if self.postgres is not None and self.databases:
            pg = self.postgres.cpu(self.databases)
            out["postgres backends"] = pg["backend"]
            out["postgres helpers"] = pg["helpers"]
        return out

    def __enter__(self) -> CpuSnapshot:
        self._before = self.read()
        return self

    def __exit__(self, *exc: object) -> None:
        after = self.read()
        # Backends are per connection: the pool may open new ones mid-run (counted from 0).
        self.used = {key: max(0.0, after[key] - self._before.get(key, 0.0)) for key in after}


# -- the machine ------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        sys.exit("wrk is not installed, and this is not root: apt-get install -y wrk")
    print("installing wrk (apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, check=True)


def prepare(pin_self: int | None = LOAD_CPU, wrk: bool = True) -> None:
    """Check the machine (2 cores), install wrk when needed, pin this process (the Python load
    generator) to the load core, and run its loads on uvloop as the node does."""
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        sys.exit("the benchmark needs 2 cores: the server on one, the load on the other")
    if wrk:
        ensure_wrk()
    if pin_self is not None:
        os.sched_setaffinity(0, {pin_self})
    try:  # the Python load generator runs on the same loop as the servers, to cost the load core less
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def cpu_pressure() -> str:
    """`some avg60` of /proc/pressure/cpu: the share of the last minute some task waited for a core."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "n/a"
    fields = dict(item.split("=") for item in line.split()[1:])
    return f"{float(fields.get('avg60', 0)):.0f}%"


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benches that drive nodes with wrk and the job load (stores.py, cluster.py)."""
    parser.add_argument("--connections", type=int, default=64, help="wrk connections in all (default 64)")
    parser.add_argument("--job-concurrency", type=int, default=32, help="clients of the job load (default 32)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="poll interval of the job load (default 5 ms)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs, SQLite stores)")


def run_and_report(start: Callable[[], Any], ratio: str, json_path: Path | None) -> None:
    """Start a bench (`start()` builds it; its run() gives the Results), close it whatever happens,
    and print the summary with how loaded the machine was before and after."""
    started, load_before, pressure_before = time.monotonic(), load_average(), cpu_pressure()
    bench = start()
    try:
        results: Results = bench.run()
    finally:
        bench.close()
    results.report(
        f"summary ({time.monotonic() - started:.0f} s; ratio = {ratio}; load average {load_before} "
        f"at the start, {load_average()} at the end; CPU pressure {pressure_before} -> {cpu_pressure()})",
        json_path,
    )
