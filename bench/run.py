"""The node's benchmark: one command that starts everything it needs.

    .venv/bin/python bench/run.py            # full run, ~5 minutes (within 10)
    .venv/bin/python bench/run.py --quick    # ~1.5 minutes

The servers under test — the node on its embedded default store (SQLite in a
temporary directory), and the bare aiohttp ceiling of bench/ceiling.py — run
pinned to core 0. The load generators (wrk, and this process for the latency
loads) and the services (hello-world, and the park sink of bench/park.py) run
on core 1. Node and ceiling are measured in alternating rounds, and every
figure is printed next to the ceiling's figure from the same run, as a ratio.
bench/README.md says what each figure means and lists the latest ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import loads  # noqa: E402
from harness import Harness, prepare  # noqa: E402
from measure import (  # noqa: E402
    LOAD_CPU,
    SERVER_CPU,
    CpuMeter,
    Figure,
    Proc,
    Results,
    percentile,
    pin,
    wrk,
)

from node.api.jobs import STREAM_ID_GAP_SECONDS  # noqa: E402
from tests.support.processes import free_port  # noqa: E402

PYTHON = sys.executable


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _merge_wrk(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one wrk load: rates over the total time, latency percentiles as medians."""
    seconds = sum(run["seconds"] for run in runs)
    requests = sum(run["requests"] for run in runs)
    server_cpu = sum(run["cpu"]["server_cpu_s"] for run in runs)
    return {
        "rounds": len(runs),
        "requests": requests,
        "ok": sum(run["ok"] for run in runs),
        "non2xx": sum(run["non2xx"] for run in runs),
        "rate": sum(run["ok"] for run in runs) / seconds,
        "p50": _median([run["p50"] for run in runs]),
        "p99": _median([run["p99"] for run in runs]),
        "cpu_us": server_cpu / requests * 1e6 if requests else None,
        "not_found": sum(run["not_found"] or 0 for run in runs),
        "socket_errors": [run["socket_errors"] for run in runs if run["socket_errors"]],
        "cpu": {
            key: statistics.mean(run["cpu"][key] for run in runs) for key in ("server_core", "load_core", "foreign")
        },
    }


class Bench(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(keep=args.keep, node_src=args.node_src)
        self.args = args
        self.results = Results()
        quick = args.quick
        self.rounds = 2 if quick else 4
        self.round_s = 3 if quick else 5  # seconds per round of a throughput load
        self.warm_s = 1 if quick else 2
        self.latency_n = 150 if quick else 500  # sequential requests per round
        self.stream_n = 40 if quick else 150  # streams per round (the node's gap makes each >= 50 ms)
        self.connections = args.connections
        self.stored_big = args.stored
        self.stored_small = max(1, args.stored // 10)

    # -- processes ---------------------------------------------------------

    def start_services(self, cpu: int | None = LOAD_CPU) -> None:
        super().start_services(cpu)
        self.ceiling_port = free_port()
        self.ceiling = self.start(
            "ceiling",
            [
                PYTHON,
                str(BENCH / "ceiling.py"),
                "--port",
                str(self.ceiling_port),
                "--service",
                f"hello-world=http://127.0.0.1:{self.hello_port}",
            ],
            SERVER_CPU,
            f"http://127.0.0.1:{self.ceiling_port}/health",
        )

    def start_sqlite_node(self, label: str, db: Path | None = None) -> tuple[Proc, int]:
        return self.start_node(label, f"sqlite+aiosqlite:///{db}" if db is not None else None)

    # -- helpers -----------------------------------------------------------

    def meter(self, server: Proc | None) -> CpuMeter:
        return CpuMeter(server, self.procs)

    def note_cpu(self, what: str, cpu: dict[str, float]) -> None:
        flag = ""
        if cpu["load_core"] > 0.9 and cpu["server_core"] < 0.9:
            flag = "  <-- the load core is the bottleneck here"
        self.results.notes.append(
            f"{what}: server core {cpu['server_core']:.0%} busy, load core {cpu['load_core']:.0%}, "
            f"other sessions' processes {cpu['foreign']:.0%} of the machine{flag}"
        )

    def memory_figure(self, node: Proc, when: str) -> dict[str, float]:
        memory, ceiling = node.memory(), self.ceiling.memory()
        self.results.add(
            Figure(
                f"peak memory (VmHWM) after {when}",
                "MiB",
                memory["VmHWM"],
                ceiling["VmHWM"],
                note=f"node VmRSS {memory['VmRSS']:.1f} MiB",
            )
        )
        self.results.raw[f"memory after {when}"] = {"node": memory, "ceiling": ceiling}
        return memory

    def wrk_rounds(
        self, what: str, script: Path, node: Proc, node_port: int, node_args: Sequence[str], ceiling_args: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Warm both up, then alternate ceiling and node rounds."""
        targets = {
            "ceiling": (f"http://127.0.0.1:{self.ceiling_port}/api/jobs", ceiling_args, self.ceiling),
            "node": (f"http://127.0.0.1:{node_port}/api/jobs", node_args, node),
        }
        for url, args, _ in targets.values():
            wrk(url, script, args, self.warm_s, self.connections)
        runs: dict[str, list[dict[str, Any]]] = {"ceiling": [], "node": []}
        for _ in range(self.rounds):
            for label, (url, args, proc) in targets.items():
                runs[label].append(wrk(url, script, args, self.round_s, self.connections, proc, self.procs))
        merged = {label: _merge_wrk(items) for label, items in runs.items()}
        for label, result in merged.items():
            self.note_cpu(f"{what} / {label}", result["cpu"])
            for errors in result["socket_errors"]:
                self.results.notes.append(f"{what} / {label}: wrk socket errors {errors}")
        self.results.raw[what] = merged
        return merged["node"], merged["ceiling"]

    # -- 1. POST /api/jobs -------------------------------------------------

    def post_load(self) -> None:
        print("== 1. POST /api/jobs (the jobs park in a service that never answers: the accept path alone)", flush=True)
        node, port = self.start_node("post")
        ids_file = self.tmp / "accepted-ids.txt"
        script = BENCH / "lua" / "post.lua"
        n, c = self.wrk_rounds("POST /api/jobs", script, node, port, [str(ids_file), "park"], ["", "park"])
        self.results.add(
            Figure("POST /api/jobs accepted/s", "req/s", n["rate"], c["rate"], note=f"node non-2xx {n['non2xx']}"),
            Figure("POST /api/jobs latency p50", "ms", n["p50"], c["p50"]),
            Figure("POST /api/jobs latency p99", "ms", n["p99"], c["p99"]),
            Figure("POST /api/jobs server CPU per request", "us", n["cpu_us"], c["cpu_us"]),
            Figure("POST /api/jobs/s a whole core would give (1 / CPU)", "req/s", 1e6 / n["cpu_us"], 1e6 / c["cpu_us"]),
        )
        # Every id the node answered 200 with, warm-up included (post.lua writes them).
        accepted = [json.loads(line)["id"] for line in ids_file.read_text().splitlines() if line.strip()]
        self.memory_figure(node, f"the POST load ({len(accepted):,} jobs queued)")
        print("   SIGKILL the node, restart it on the same store, look for every accepted id", flush=True)
        node.kill()
        self.procs.remove(node)
        node, port = self.start_sqlite_node("post", self.tmp / "post" / "node.db")
        found = asyncio.run(loads.stored_count(port, accepted))
        self.stop(node)
        self.results.raw["durability"] = {"accepted": len(accepted), "found": found}
        by_cpu, by_rate = c["cpu_us"] / n["cpu_us"], n["rate"] / c["rate"]
        self.results.target(
            by_cpu >= 0.5 and found == len(accepted),
            f"POST /api/jobs at {by_cpu:.0%} of the ceiling's rate on a core of its own, by CPU per request "
            f"({by_rate:.0%} measured on the shared machine; target >= 50%); "
            f"{found:,} of {len(accepted):,} accepted jobs found after SIGKILL and restart",
        )

    # -- 2. jobs end to end, and 4. streams ----------------------------------

    def job_loads(self) -> None:
        print("== 2. jobs end to end through hello-world", flush=True)
        node, port = self.start_node("e2e")
        direct: list[float] = []
        lat: dict[str, list[float]] = {"ceiling": [], "node": []}
        polls: dict[str, list[float]] = {"ceiling": [], "node": []}
        node_ids: list[str] = []
        for _ in range(self.rounds):
            direct += asyncio.run(loads.direct_calls(self.hello_port, self.latency_n))
            for label, target in (("ceiling", self.ceiling_port), ("node", port)):
                times, ids, mean_polls = asyncio.run(loads.job_latency(target, self.latency_n))
                lat[label] += times
                polls[label].append(mean_polls)
                if label == "node":
                    node_ids += ids
        d50, d99 = percentile(direct, 50), percentile(direct, 99)
        n50, n99 = percentile(lat["node"], 50), percentile(lat["node"], 99)
        c50, c99 = percentile(lat["ceiling"], 50), percentile(lat["ceiling"], 99)
        inside = self._inside_node(self.tmp / "e2e" / "node.db", node_ids)
        self.results.add(
            Figure("direct service call p50 / p99 (reference)", "ms", d50, d50, note=f"p99 {d99:.3f} ms"),
            Figure(
                "job latency p50 (POST, then GETs until done)",
                "ms",
                n50,
                c50,
                note=f"GETs per job: node {statistics.mean(polls['node']):.1f}, "
                f"ceiling {statistics.mean(polls['ceiling']):.1f}",
            ),
            Figure("job latency p99", "ms", n99, c99),
            Figure("added over a direct service call, p50", "ms", n50 - d50, c50 - d50),
            Figure("added over a direct service call, p99", "ms", n99 - d99, c99 - d99),
            Figure(
                "inside the node: accepted -> finished, p50",
                "ms",
                inside,
                None,
                note="from the store's created_at/finished_at; includes the service call",
            ),
        )
        self.results.target(
            n50 - d50 <= 1.0,
            f"the node adds {n50 - d50:.2f} ms over a direct service call at p50 (target <= 1 ms; "
            f"the bare ceiling adds {c50 - d50:.2f} ms)",
        )

        concurrency, poll = self.args.job_concurrency, self.args.poll_ms / 1000
        counts = {"ceiling": [0, 0.0, 0.0], "node": [0, 0.0, 0.0]}
        cpus: dict[str, list[dict[str, float]]] = {"ceiling": [], "node": []}
        for _ in range(self.rounds):
            for label, target, proc in (("ceiling", self.ceiling_port, self.ceiling), ("node", port, node)):
                with self.meter(proc) as meter:
                    done, seconds = asyncio.run(loads.job_throughput(target, self.round_s, concurrency, poll))
                counts[label][0] += done
                counts[label][1] += seconds
                counts[label][2] += meter.server_cpu
                cpus[label].append(meter.summary())
        rate = {label: value[0] / value[1] for label, value in counts.items()}
        # The server's CPU includes the half-second warm-up of each round: per job it is a little high.
        per_job = {label: value[2] / max(1, value[0]) * 1e6 for label, value in counts.items()}
        for label in cpus:
            self.note_cpu(
                f"jobs completed/s / {label}",
                {
                    key: statistics.mean(item[key] for item in cpus[label])
                    for key in ("server_core", "load_core", "foreign")
                },
            )
        self.results.add(
            Figure(
                f"jobs completed/s ({concurrency} clients polling every {poll * 1000:g} ms)",
                "jobs/s",
                rate["node"],
                rate["ceiling"],
            ),
            Figure("server CPU per completed job", "us", per_job["node"], per_job["ceiling"]),
            Figure(
                "jobs/s a whole core would give (1 / CPU)", "jobs/s", 1e6 / per_job["node"], 1e6 / per_job["ceiling"]
            ),
        )
        self.memory_figure(node, "the job loads")

        print(
            f"== 4. streaming: time to first byte (the node holds output {STREAM_ID_GAP_SECONDS * 1000:g} ms "
            "after the id line)",
            flush=True,
        )
        streams: dict[str, dict[str, list[float]]] = {
            label: {"first_byte": [], "first_output": []} for label in ("direct", "ceiling", "node")
        }
        for _ in range(self.rounds):
            for label, target in (("direct", self.hello_port), ("ceiling", self.ceiling_port), ("node", port)):
                got = asyncio.run(loads.stream_ttfb(target, self.stream_n, direct=label == "direct"))
                for key in got:
                    streams[label][key] += got[key]
        s = {
            label: {key: percentile(values, 50) if values else float("nan") for key, values in got.items()}
            for label, got in streams.items()
        }
        d = s["direct"]["first_byte"]
        gap_ms = STREAM_ID_GAP_SECONDS * 1000
        node_output = s["node"]["first_output"]
        self.results.add(
            Figure("direct service: first output byte p50 (reference)", "ms", d, d),
            Figure("stream: first byte (the id line) p50", "ms", s["node"]["first_byte"], s["ceiling"]["first_byte"]),
            Figure(
                "stream: first output byte p50",
                "ms",
                node_output,
                s["ceiling"]["first_output"],
                note=f"the node waits {gap_ms:g} ms after the id line by design",
            ),
            Figure(
                "stream: id line, above the direct first byte, p50",
                "ms",
                s["node"]["first_byte"] - d,
                s["ceiling"]["first_byte"] - d,
            ),
            Figure(
                "stream: first output, above the direct first byte, p50",
                "ms",
                node_output - d,
                s["ceiling"]["first_output"] - d,
            ),
            Figure(
                "stream: first output minus the deliberate gap, above direct",
                "ms",
                node_output - gap_ms - d,
                s["ceiling"]["first_output"] - d,
            ),
            Figure(
                "stream: first output byte p99",
                "ms",
                percentile(streams["node"]["first_output"], 99),
                percentile(streams["ceiling"]["first_output"], 99),
            ),
        )
        first_byte_over = s["node"]["first_byte"] - d
        self.results.target(
            first_byte_over <= 2.0,
            f"stream: the first byte (id line) comes {first_byte_over:.2f} ms after the direct service's first byte "
            f"(target <= 2 ms); the first output comes {node_output - d:.2f} ms after it, of which "
            f"{gap_ms:g} ms is the deliberate id-line gap (STREAM_ID_GAP_SECONDS)",
        )
        self.memory_figure(node, "the stream load")
        self.stop(node)

    def _inside_node(self, db: Path, ids: list[str]) -> float | None:
        """Median time from accepting a job to finishing it, from the node's own timestamps."""
        if not ids:
            return None
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            spans = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = f"SELECT finished_at - created_at FROM jobs WHERE id IN ({','.join('?' * len(chunk))})"
                spans += [row[0] * 1000 for row in connection.execute(query, chunk) if row[0] is not None]
        finally:
            connection.close()
        return statistics.median(spans) if spans else None

    # -- 3. GET by id with many jobs stored, and memory ----------------------

    def get_loads(self) -> None:
        print(
            f"== 3. GET /api/jobs?id= with {self.stored_big:,} jobs stored (and {self.stored_small:,}, for memory)",
            flush=True,
        )
        script = BENCH / "lua" / "get.lua"
        memory: dict[int, dict[str, float]] = {}
        rates: dict[int, tuple[float, float]] = {}
        for count in (self.stored_small, self.stored_big):
            db = self.tmp / f"stored-{count}" / "node.db"
            sample = self.tmp / f"ids-{count}.txt"
            started = time.perf_counter()
            subprocess.run(
                [PYTHON, str(BENCH / "seed.py"), str(db), str(count), "--sample", str(sample)],
                check=True,
                cwd=ROOT,
                preexec_fn=pin(LOAD_CPU),
                capture_output=True,
            )
            print(f"   seeded {count:,} jobs in {time.perf_counter() - started:.1f}s", flush=True)
            node, port = self.start_sqlite_node(f"stored-{count}", db)
            n, c = self.wrk_rounds(
                f"GET /api/jobs?id= ({count:,} stored)", script, node, port, [str(sample)], [str(sample)]
            )
            self.results.add(
                Figure(
                    f"GET /api/jobs?id= req/s, {count:,} stored",
                    "req/s",
                    n["rate"],
                    c["rate"],
                    note=f"node answers without the job: {n['not_found']}",
                ),
                Figure(f"GET /api/jobs?id= latency p50, {count:,} stored", "ms", n["p50"], c["p50"]),
                Figure(f"GET /api/jobs?id= latency p99, {count:,} stored", "ms", n["p99"], c["p99"]),
                Figure(f"GET /api/jobs?id= server CPU per request, {count:,} stored", "us", n["cpu_us"], c["cpu_us"]),
                Figure(
                    f"GET /api/jobs?id=/s a whole core would give, {count:,} stored",
                    "req/s",
                    1e6 / n["cpu_us"],
                    1e6 / c["cpu_us"],
                ),
            )
            memory[count] = self.memory_figure(node, f"the GET load, {count:,} stored")
            rates[count] = (n["rate"] / c["rate"], c["cpu_us"] / n["cpu_us"])
            self.stop(node)
            shutil.rmtree(db.parent, ignore_errors=True)
        by_rate, by_cpu = rates[self.stored_big]
        self.results.target(
            by_cpu >= 0.5,
            f"GET /api/jobs?id= with {self.stored_big:,} stored at {by_cpu:.0%} of the ceiling's rate on a core of "
            f"its own, by CPU per request ({by_rate:.0%} measured on the shared machine; target >= 50%)",
        )
        small, big = memory[self.stored_small], memory[self.stored_big]
        change = (big["VmHWM"] - small["VmHWM"]) / small["VmHWM"]
        self.results.target(
            abs(change) <= 0.10,
            f"memory: peak {small['VmHWM']:.1f} MiB with {self.stored_small:,} stored, {big['VmHWM']:.1f} MiB with "
            f"{self.stored_big:,} ({change:+.1%}; target within 10%)",
        )
        self.results.raw["memory by stored jobs"] = memory

    def run(self) -> Results:
        print(
            f"bench: work dir {self.tmp}; servers on core {SERVER_CPU}, load and services on core {LOAD_CPU}; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        self.start_services()
        for step in self.args.only or ("post", "jobs", "get"):
            {"post": self.post_load, "jobs": self.job_loads, "get": self.get_loads}[step]()
        return self.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short loads (~2 minutes)")
    parser.add_argument("--only", action="append", choices=("post", "jobs", "get"), help="run only these loads")
    parser.add_argument("--stored", type=int, default=1_000_000, help="jobs stored for the GET load (default 1M)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--job-concurrency", type=int, default=32, help="clients of the job load (default 32)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="poll interval of the job load (default 5 ms)")
    parser.add_argument(
        "--node-src",
        type=Path,
        help="run the node from this source checkout instead (e.g. a git worktree of an older revision)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = parser.parse_args()
    prepare()
    bench = Bench(args)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        results = bench.run()
    finally:
        bench.close()
    results.report(
        f"summary ({time.monotonic() - started:.0f} s; ratio = node / ceiling; load average "
        f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)",
        args.json,
    )


if __name__ == "__main__":
    main()
