"""Processes pinned to cores, CPU and memory accounting, wrk, and the figures table."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import wait_http

SERVER_CPU = 0
LOAD_CPU = 1
TICK = os.sysconf("SC_CLK_TCK")


def pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Proc:
    """A child process pinned to one core, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as sink:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                preexec_fn=pin(cpu),
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, url: str, deadline: float = 60.0) -> None:
        try:
            wait_http(url, deadline, self.popen)
        except Exception:
            self.stop()
            sys.exit(f"{self.name} did not start; its log ({self.log}):\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def cpu_seconds(self) -> float:
        return process_cpu(self.pid) if self.alive() else 0.0

    def memory(self) -> dict[str, float]:
        """VmHWM (peak resident) and VmRSS, in MiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024
        return values


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _own_cpu() -> float:
    """CPU seconds of this process and of the children it waited for (wrk, seeding)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _core_times() -> dict[str, tuple[float, float]]:
    """Per core: (busy seconds, all seconds) since boot, steal counted apart from both."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]
            user, nice, system, idle, iowait, irq, softirq, _steal = ticks
            busy = user + nice + system + irq + softirq
            out[name] = (busy / TICK, (busy + idle + iowait) / TICK)
    return out


class CpuMeter:
    """How busy each core was over an interval, how much CPU the server under test used,
    and how much went to processes that are not part of the benchmark."""

    def __init__(self, server: Proc | None, ours: Sequence[Proc] = ()) -> None:
        self.server = server
        self.ours = [proc for proc in ours if proc is not server]

    def __enter__(self) -> CpuMeter:
        self._cores = _core_times()
        self._server = self.server.cpu_seconds() if self.server else 0.0
        self._ours = sum(proc.cpu_seconds() for proc in self.ours) + _own_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        cores = _core_times()
        self.server_cpu = (self.server.cpu_seconds() if self.server else 0.0) - self._server
        ours = sum(proc.cpu_seconds() for proc in self.ours) + _own_cpu() - self._ours
        self.busy = {}
        busy_total = all_total = 0.0
        for name, (busy, total) in cores.items():
            d_busy, d_total = busy - self._cores[name][0], total - self._cores[name][1]
            self.busy[name] = d_busy / d_total if d_total else 0.0
            busy_total += d_busy
            all_total += d_total
        # What neither the server nor the load used: other sessions' processes on this machine.
        self.foreign = max(0.0, busy_total - self.server_cpu - ours) / all_total if all_total else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "server_core": self.busy.get(f"cpu{SERVER_CPU}", 0.0),
            "load_core": self.busy.get(f"cpu{LOAD_CPU}", 0.0),
            "foreign": self.foreign,
            "server_cpu_s": self.server_cpu,
        }


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)\b", text)
    if not match:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000, "m": value * 60_000}[unit]


def wrk_argv(url: str, script: Path, args: Sequence[str], seconds: int, connections: int) -> list[str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    return [*command, "--", *args] if args else command


def wrk(
    url: str,
    script: Path,
    args: Sequence[str],
    seconds: int,
    connections: int,
    server: Proc | None = None,
    ours: Sequence[Proc] = (),
) -> dict[str, Any]:
    """Run wrk (one thread, pinned to the load core) and parse what it prints."""
    with CpuMeter(server, ours) as cpu:
        output = subprocess.run(
            wrk_argv(url, script, args, seconds, connections),
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=pin(LOAD_CPU),
        ).stdout
    return {"cpu": cpu.summary(), **parse_wrk(output)}


def wrk_together(
    urls: Sequence[str], script: Path, args: Sequence[str], seconds: int, connections: int, cpu: int | None = LOAD_CPU
) -> list[dict[str, Any]]:
    """One wrk per URL, all at once (`connections` each); what each printed."""
    runs = [
        subprocess.Popen(
            wrk_argv(url, script, args, seconds, connections), stdout=subprocess.PIPE, text=True, preexec_fn=pin(cpu)
        )
        for url in urls
    ]
    outputs = [run.communicate()[0] for run in runs]
    for run in runs:
        if run.returncode:
            raise subprocess.CalledProcessError(run.returncode, run.args)
    return [parse_wrk(output) for output in outputs]


def parse_wrk(output: str) -> dict[str, Any]:
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    assert total, output
    result: dict[str, Any] = {"requests": int(total.group(1)), "seconds": _ms(total.group(2)) / 1000}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["ok"] = result["requests"] - result["non2xx"]
    errors = re.search(r"Socket errors: (.*)", output)
    result["socket_errors"] = errors.group(1) if errors else ""
    for q in ("50", "99"):
        match = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{q}"] = _ms(match.group(1)) if match else None
    found = re.search(r"not-found: (\d+)", output)
    result["not_found"] = int(found.group(1)) if found else None
    return result


# -- figures --------------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity, for the node and for the ceiling; ratio = node / ceiling."""

    name: str
    unit: str
    node: float | None
    ceiling: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.node is None or not self.ceiling:
            return None
        return self.node / self.ceiling


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    # What the two columns are called in the table (the ratio is the first over the second).
    labels: tuple[str, str] = ("node", "ceiling")

    def add(self, *figures: Figure) -> None:
        for figure in figures:
            self.figures.append(figure)
            print("   " + format_figure(figure, self.labels), flush=True)

    def report(self, title: str, json_path: Path | None = None) -> None:
        """The closing table: every figure, the targets and the notes; all of it also as JSON."""
        print(f"\n== {title}")
        for figure in self.figures:
            print(format_figure(figure, self.labels))
        print("\ntargets:")
        for line in self.targets:
            print("  " + line)
        print("\nnotes:")
        for note in self.notes:
            print("  " + note)
        if json_path is not None:
            figures = [{**figure.__dict__, "ratio": figure.ratio} for figure in self.figures]
            document = {"figures": figures, "targets": self.targets, "notes": self.notes, "raw": self.raw}
            json_path.write_text(json.dumps(document, indent=2, default=str))

    def target(self, met: bool | None, text: str) -> None:
        line = f"[{'MET ' if met else 'MISS' if met is not None else ' -- '}] {text}"
        self.targets.append(line)
        print("   " + line, flush=True)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "%":
        return f"{value:.0%}"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:.3f} x"
    if unit == "tok/s":
        return f"{value:.1f} tok/s"
    return f"{value:,.0f} {unit}"


def format_figure(figure: Figure, labels: tuple[str, str] = ("node", "ceiling")) -> str:
    ratio = f"{figure.ratio:5.2f}" if figure.ratio is not None else "    -"
    return (
        f"{figure.name:<52} {labels[0]} {format_value(figure.node, figure.unit):>13}   "
        f"{labels[1]} {format_value(figure.ceiling, figure.unit):>13}   ratio {ratio}"
        + (f"   ({figure.note})" if figure.note else "")
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]
