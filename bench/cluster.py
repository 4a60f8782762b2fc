"""Two nodes vs one, both on one PostgreSQL, on this machine (issue 14).

    .venv/bin/python bench/cluster.py            # full run, ~2.5 minutes
    .venv/bin/python bench/cluster.py --quick    # ~1 minute
    make bench-cluster                           # the first line, after scripts/setup-venv.sh

Two loads, as bench/run.py runs them against one node:

1. jobs end to end: 32 clients that each submit a hello-world job and poll it every 5 ms
   until done (spread evenly over the nodes, each client keeping to one node);
2. POST /api/jobs accepted/s: wrk with 64 connections in all (one wrk per node, 64 / nodes
   connections each), the jobs parked in a service that never answers.

Everything runs on this one machine: the nodes, the PostgreSQL server (scripts/postgres.sh),
hello-world and park, wrk and this process. Nothing is pinned: the scheduler shares the
two cores among all of them, as it would on a single host. So a second node cannot double
anything: it can only take the cores' idle time, and it competes with PostgreSQL and the load
generator for the rest. The run prints what the machine had to give (the idle share during
the one-node rounds) next to the ratio, and the CPU per job on each side from
/proc/<pid>/stat: the node processes, the PostgreSQL backends of the run's database (plus
the server-wide WAL writer and checkpointer), and the load generator and services.

Each round starts the nodes on a fresh database (so no round inherits another's parked
jobs), runs the job load, then the POST load; rounds alternate one node and two nodes.
Ratio = two nodes / one node.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import loads  # noqa: E402
from harness import (  # noqa: E402
    CpuSnapshot,
    Harness,
    Postgres,
    add_load_arguments,
    cpu_pressure,
    load_average,
    prepare,
    run_and_report,
)
from measure import CpuMeter, Figure, Proc, Results, wrk_together  # noqa: E402

SIDES = (2, 1)  # the table's columns: the ratio is two nodes / one node
LABELS = ("two nodes", "one node")


def _own_cpu() -> float:
    """CPU seconds of this process (the Python load) and of the children it waited for (wrk)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class Tally:
    """One side's totals over its rounds of one load."""

    def __init__(self) -> None:
        self.done = 0
        self.seconds = 0.0
        self.cpu: dict[str, float] = {}
        self.busy: list[float] = []  # the machine's busy share (both cores) per round
        self.latency: list[dict[str, Any]] = []

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def per(self, key: str) -> float | None:
        return self.cpu.get(key, 0.0) / self.done * 1e6 if self.done else None


class ClusterBench(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(keep=args.keep)
        self.args = args
        self.results = Results(labels=LABELS)
        self.rounds = 2 if args.quick else 3
        self.round_s = 3 if args.quick else 6
        self.warm_s = 1 if args.quick else 2
        self.postgres = Postgres()
        self.tallies: dict[str, dict[int, Tally]] = {"jobs": {}, "post": {}}

    def start_cluster(self, count: int) -> tuple[str, dict[str, Proc], list[int]]:
        database = self.postgres.fresh_database()
        nodes, ports = {}, []
        for index in range(count):
            name = f"node-{'ab'[index]}"
            proc, port = self.start_node(f"{count}-{name}", database, cpu=None, cluster={"node_id": name})
            nodes[name] = proc
            ports.append(port)
        return database, nodes, ports

    def measured(self, load: str, count: int, database: str, nodes: dict[str, Proc], run: Any) -> Any:
        tally = self.tallies[load].setdefault(count, Tally())
        others = [proc for proc in self.procs if proc not in nodes.values()]  # the services
        snapshot = CpuSnapshot(nodes, self.postgres, [database])
        own = _own_cpu()
        services = sum(proc.cpu_seconds() for proc in others)
        with CpuMeter(None, self.procs) as meter, snapshot:
            result = run()
        used = dict(snapshot.used)
        used["nodes"] = sum(used.pop(name) for name in nodes)
        used["load"] = _own_cpu() - own + sum(proc.cpu_seconds() for proc in others) - services
        for key, value in used.items():
            tally.cpu[key] = tally.cpu.get(key, 0.0) + value
        tally.busy.append(statistics.mean(meter.busy.values()))
        return result

    def one_round(self, count: int) -> None:
        database, nodes, ports = self.start_cluster(count)
        concurrency, poll = self.args.job_concurrency, self.args.poll_ms / 1000
        asyncio.run(loads.job_throughput(ports, self.warm_s, concurrency, poll))
        done, seconds = self.measured(
            "jobs",
            count,
            database,
            nodes,
            lambda: asyncio.run(loads.job_throughput(ports, self.round_s, concurrency, poll)),
        )
        jobs = self.tallies["jobs"][count]
        jobs.done += done
        jobs.seconds += seconds
        print(f"   {count} node(s): {done / seconds:,.0f} jobs/s", flush=True)

        urls = [f"http://127.0.0.1:{port}/api/jobs" for port in ports]
        script, connections = BENCH / "lua" / "post.lua", self.args.connections // count
        wrk_together(urls, script, ["", "park"], self.warm_s, connections, cpu=None)
        runs = self.measured(
            "post",
            count,
            database,
            nodes,
            lambda: wrk_together(urls, script, ["", "park"], self.round_s, connections, cpu=None),
        )
        post = self.tallies["post"][count]
        post.done += sum(run["ok"] for run in runs)
        post.seconds += max(run["seconds"] for run in runs)
        post.latency += runs
        print(
            f"   {count} node(s): {sum(run['ok'] for run in runs) / max(run['seconds'] for run in runs):,.0f} "
            "POST /api/jobs accepted/s",
            flush=True,
        )
        for proc in nodes.values():
            self.stop(proc)

    def figures(self, load: str, name: str, unit: str, what: str) -> None:
        two, one = self.tallies[load][2], self.tallies[load][1]
        figures = [Figure(name, unit, two.rate, one.rate)]
        if two.latency:
            for q in ("p50", "p99"):
                figures.append(
                    Figure(
                        f"  latency {q}",
                        "ms",
                        statistics.median(r[q] for r in two.latency),
                        statistics.median(r[q] for r in one.latency),
                    )
                )
        for key, label in (
            ("nodes", "node processes"),
            ("postgres backends", "PostgreSQL backends"),
            ("postgres helpers", "PostgreSQL WAL writer etc. (all databases)"),
            ("load", "load generator and services"),
        ):
            figures.append(Figure(f"  CPU per {what}: {label}", "us", two.per(key), one.per(key)))
        store_side = {
            side: (tally.per("nodes") or 0) + (tally.per("postgres backends") or 0)
            for side, tally in ((2, two), (1, one))
        }
        figures.append(Figure(f"  CPU per {what}: nodes + PostgreSQL", "us", store_side[2], store_side[1]))
        figures.append(
            Figure(
                "  machine busy (both cores, all processes)", "%", statistics.mean(two.busy), statistics.mean(one.busy)
            )
        )
        self.results.add(*figures)
        # Shares of the machine (2 cores) this run's processes used on each side; other sessions used the rest.
        ours = {side: sum(t.cpu.values()) / t.seconds / 2 for side, t in ((2, two), (1, one))}
        self.results.target(
            None,
            f"{name}: two nodes give {two.rate / one.rate if one.rate else 0:.2f} x one node. This run's "
            f"processes used {ours[1]:.0%} of the 2 cores with one node, {ours[2]:.0%} with two; the machine was "
            f"{statistics.mean(one.busy):.0%} / {statistics.mean(two.busy):.0%} busy in all (other sessions' "
            "processes included). Where one node is CPU-bound, a second node on the same 2 cores can only take "
            "idle time or other processes' share, never double",
        )
        self.results.raw[name] = {
            side: {"done": t.done, "seconds": t.seconds, "cpu_s": t.cpu, "busy": t.busy}
            for side, t in ((2, two), (1, one))
        }

    def run(self) -> Results:
        print(
            f"bench: work dir {self.tmp}; nothing pinned (2 cores for nodes, PostgreSQL, load, services); "
            f"load average {load_average()}, CPU pressure {cpu_pressure()}",
            flush=True,
        )
        self.start_services(cpu=None)
        for index in range(self.rounds):
            for count in (1, 2) if index % 2 == 0 else (2, 1):
                self.one_round(count)
        self.figures("jobs", "jobs completed/s (32 clients, 5 ms polls)", "jobs/s", "job")
        self.figures("post", "POST /api/jobs accepted/s (64 connections)", "req/s", "request")
        return self.results

    def close(self) -> None:
        super().close()
        self.postgres.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short loads (~1 minute)")
    add_load_arguments(parser)
    args = parser.parse_args()
    prepare(pin_self=None)
    run_and_report(lambda: ClusterBench(args), "two nodes / one node", args.json)


if __name__ == "__main__":
    main()
