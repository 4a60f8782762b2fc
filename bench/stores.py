"""One node, PostgreSQL vs SQLite (issue 14): the same loads on both stores, in one run.

    .venv/bin/python bench/stores.py            # full run, ~3 minutes
    .venv/bin/python bench/stores.py --quick    # ~1.5 minutes
    make bench-stores                           # the first line, after scripts/setup-venv.sh

Two loads, as bench/run.py runs them (bench/README.md says what each figure means):

1. POST /api/jobs accepted/s: wrk, 64 connections, the jobs go to the park service (never
   answers), so this is the accept path alone: admit, store, answer;
2. jobs end to end: 32 clients that each submit a hello-world job and poll it every 5 ms
   until it is done; jobs completed per second.

The node runs pinned to core 0 on each store in turn, rounds alternating between the stores;
wrk, the Python load, hello-world and park run on core 1. SQLite is a file in a temporary
directory (the node's embedded default); PostgreSQL is the shared server of scripts/postgres.sh
(127.0.0.1:55432), a fresh database per node, dropped at the end. The PostgreSQL server is
not pinned: its backends run wherever the scheduler puts them, so its rate may borrow the load
core's idle time. Hence the CPU figures: node CPU per request, plus the CPU of the PostgreSQL
backends serving the node's database (and the server-wide WAL writer/checkpointer, shared with
other databases), from /proc/<pid>/stat. Ratio = PostgreSQL / SQLite; target >= 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import loads  # noqa: E402
from harness import Harness, Postgres, add_load_arguments, cpu_pressure, load_average, prepare, run_and_report  # noqa: E402
from measure import LOAD_CPU, SERVER_CPU, CpuMeter, Figure, Proc, Results, wrk  # noqa: E402

STORES = ("postgresql", "sqlite")  # the table's columns: the ratio is PostgreSQL / SQLite
TARGET = 0.7


class Node:
    """A node under test on one store, and what it used over the rounds."""

    def __init__(self, store: str, proc: Proc, port: int, database: str | None) -> None:
        self.store = store
        self.proc = proc
        self.port = port
        self.database = database  # the PostgreSQL database's URL
        self.done = 0  # requests accepted, or jobs completed
        self.seconds = 0.0
        self.node_cpu = 0.0
        self.pg_cpu = 0.0  # its database's backends
        self.pg_helpers = 0.0  # the server's WAL writer, checkpointer... (all databases)
        self.latency: list[dict[str, Any]] = []
        self.cores: list[dict[str, float]] = []

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def per(self, cpu: float) -> float | None:
        """Microseconds of `cpu` per request or job."""
        return cpu / self.done * 1e6 if self.done else None


class StoresBench(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(keep=args.keep)
        self.args = args
        self.results = Results(labels=("postgresql", "sqlite"))
        self.rounds = 2 if args.quick else 4
        self.round_s = 3 if args.quick else 6
        self.warm_s = 1 if args.quick else 2
        self.postgres = Postgres()
        self._round_started = 0.0

    def nodes(self, what: str) -> dict[str, Node]:
        out = {}
        for store in STORES:
            database = self.postgres.fresh_database() if store == "postgresql" else None
            proc, port = self.start_node(f"{what}-{store}", database, SERVER_CPU)
            out[store] = Node(store, proc, port, database)
        return out

    def measured(self, node: Node, run: Any) -> Any:
        """Run one round against `node`, adding what it used to its counters."""
        databases = [node.database] if node.database else []
        before = self.postgres.cpu(databases) if databases else {"backend": 0.0, "helpers": 0.0}
        with CpuMeter(node.proc, self.procs) as meter:
            result = run()
        after = self.postgres.cpu(databases) if databases else {"backend": 0.0, "helpers": 0.0}
        node.node_cpu += meter.server_cpu
        pg = max(0.0, after["backend"] - before["backend"])
        helpers = max(0.0, after["helpers"] - before["helpers"])
        node.pg_cpu += pg
        node.pg_helpers += helpers
        cores = meter.summary()
        # CpuMeter counts PostgreSQL as "other processes": take it out of the machine's share.
        seconds = max(1e-9, time.monotonic() - self._round_started)
        cores["foreign"] = max(0.0, cores["foreign"] - (pg + helpers) / (2 * seconds))
        node.cores.append(cores)
        return result

    def rounds_of(self, nodes: dict[str, Node], one_round: Any) -> None:
        for _ in range(self.rounds):
            for node in nodes.values():
                self._round_started = time.monotonic()
                one_round(node)

    def post_load(self) -> None:
        print("== 1. POST /api/jobs (jobs park in a service that never answers: the accept path alone)", flush=True)
        nodes = self.nodes("post")
        script = BENCH / "lua" / "post.lua"

        def url(node: Node) -> str:
            return f"http://127.0.0.1:{node.port}/api/jobs"

        for node in nodes.values():
            wrk(url(node), script, ["", "park"], self.warm_s, self.args.connections)

        def one_round(node: Node) -> None:
            got = self.measured(node, lambda: wrk(url(node), script, ["", "park"], self.round_s, self.args.connections))
            node.done += got["ok"]
            node.seconds += got["seconds"]
            node.latency.append(got)

        self.rounds_of(nodes, one_round)
        self.figures("POST /api/jobs accepted/s", "req/s", nodes, latency=True)
        for node in nodes.values():
            self.stop(node.proc)

    def job_load(self) -> None:
        concurrency, poll = self.args.job_concurrency, self.args.poll_ms / 1000
        print(
            f"== 2. jobs end to end through hello-world ({concurrency} clients, polls every {poll * 1000:g} ms)",
            flush=True,
        )
        nodes = self.nodes("jobs")
        for node in nodes.values():
            asyncio.run(loads.job_throughput(node.port, self.warm_s, concurrency, poll))

        def one_round(node: Node) -> None:
            done, seconds = self.measured(
                node, lambda: asyncio.run(loads.job_throughput(node.port, self.round_s, concurrency, poll))
            )
            node.done += done
            node.seconds += seconds

        self.rounds_of(nodes, one_round)
        self.figures("jobs completed/s", "jobs/s", nodes, latency=False)
        for node in nodes.values():
            self.stop(node.proc)

    def figures(self, name: str, unit: str, nodes: dict[str, Node], latency: bool) -> None:
        pg, lite = nodes["postgresql"], nodes["sqlite"]
        what = "request" if latency else "job"
        figures = [Figure(name, unit, pg.rate, lite.rate)]
        if latency:
            for q in ("p50", "p99"):
                figures.append(
                    Figure(
                        f"  latency {q} (64 connections)",
                        "ms",
                        statistics.median(r[q] for r in pg.latency),
                        statistics.median(r[q] for r in lite.latency),
                    )
                )
        pg_total = pg.node_cpu + pg.pg_cpu
        figures += [
            Figure(f"  node CPU per {what}", "us", pg.per(pg.node_cpu), lite.per(lite.node_cpu)),
            Figure(
                f"  PostgreSQL backends' CPU per {what}",
                "us",
                pg.per(pg.pg_cpu),
                None,
                note=f"server-wide WAL writer etc.: {pg.per(pg.pg_helpers) or 0:.0f} us, other databases too",
            ),
            Figure(f"  node + store CPU per {what}", "us", pg.per(pg_total), lite.per(lite.node_cpu)),
            Figure(
                f"  {unit} a whole core would give (1 / CPU)",
                unit,
                1e6 / (pg.per(pg_total) or 1e9),
                1e6 / (lite.per(lite.node_cpu) or 1e9),
            ),
        ]
        self.results.add(*figures)
        by_rate = pg.rate / lite.rate if lite.rate else 0.0
        lite_cpu, pg_cpu = lite.per(lite.node_cpu), pg.per(pg_total)
        by_cpu = lite_cpu / pg_cpu if lite_cpu and pg_cpu else 0.0
        self.results.target(
            by_rate >= TARGET,
            f"{name}: PostgreSQL at {by_rate:.2f} x SQLite measured ({by_cpu:.2f} x by node + store CPU per {what}); "
            f"target >= {TARGET}",
        )
        for node in nodes.values():
            cores = {
                key: statistics.mean(item[key] for item in node.cores)
                for key in ("server_core", "load_core", "foreign")
            }
            self.results.notes.append(
                f"{name} / {node.store}: node core {cores['server_core']:.0%} busy, load core "
                f"{cores['load_core']:.0%}, other sessions' processes {cores['foreign']:.0%} of the machine"
            )
        self.results.raw[name] = {
            node.store: {
                "done": node.done,
                "seconds": node.seconds,
                "node_cpu_s": node.node_cpu,
                "pg_backends_cpu_s": node.pg_cpu,
                "pg_helpers_cpu_s": node.pg_helpers,
            }
            for node in nodes.values()
        }

    def run(self) -> Results:
        print(
            f"bench: work dir {self.tmp}; node on core {SERVER_CPU}, load and services on core {LOAD_CPU}, "
            f"PostgreSQL unpinned; load average {load_average()}, CPU pressure {cpu_pressure()}",
            flush=True,
        )
        self.start_services()
        for step in self.args.only or ("post", "jobs"):
            {"post": self.post_load, "jobs": self.job_load}[step]()
        return self.results

    def close(self) -> None:
        super().close()
        self.postgres.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short loads (~1.5 minutes)")
    parser.add_argument("--only", action="append", choices=("post", "jobs"), help="run only these loads")
    add_load_arguments(parser)
    args = parser.parse_args()
    prepare()
    run_and_report(lambda: StoresBench(args), "PostgreSQL / SQLite", args.json)


if __name__ == "__main__":
    main()
