"""Measure the llm service's generation speed: tokens per second, and time to first token.

Runs against a running container (or app.py process) and needs only the standard library:

    docker run -d --rm --name llm --network host -e HOST=127.0.0.1 -e PORT=3000 infernet-local/llm:latest
    python3 containers/llm/bench_tokens.py --url http://127.0.0.1:3000 --runs 5 --max-tokens 128

Each run streams one request (destination 2) and times it on the client:
  - time to first token: request sent -> first content chunk;
  - decode tokens/s: (completion_tokens - 1) / (last content chunk - first content chunk);
  - overall tokens/s: completion_tokens / whole request.
completion_tokens comes from the stream's usage line, so it counts real tokens. The prompt asks
for a long story (at temperature 1 by default, a fixed seed per run), so runs rarely stop early.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def one_run(url: str, max_tokens: int, seed: int, temperature: float = 1.0) -> dict[str, float]:
    data = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
    }
    body = json.dumps({"source": 1, "destination": 2, "data": data}).encode()
    request = urllib.request.Request(
        f"{url}/service_output", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    started = time.perf_counter()
    first = last = None
    usage: dict[str, Any] = {}
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            chunk = json.loads(raw)
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
    ended = time.perf_counter()
    tokens = int(usage.get("completion_tokens", 0))
    if first is None or last is None or tokens < 2:
        raise RuntimeError(f"too few tokens to time ({tokens})")
    return {
        "completion_tokens": tokens,
        "prompt_tokens": int(usage.get("prompt_tokens", 0)),
        "ttft_s": first - started,
        "decode_tps": (tokens - 1) / (last - first) if last > first else float("nan"),
        "overall_tps": tokens / (ended - started),
    }


def wait_healthy(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url}/health did not answer within {seconds:.0f} s") from None
            time.sleep(0.2)


def container_cpu_seconds(name: str) -> float | None:
    """CPU time used so far by a Docker container (cgroup v1 or v2), or None if unknown."""
    try:
        cid = subprocess.run(
            ["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
    if v2.exists():
        for line in v2.read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="0 is greedy (the same text every run); 1 samples (default)"
    )
    parser.add_argument(
        "--container",
        help="Docker container name: also report tokens per CPU-second "
        "it used (a figure that other load on the machine disturbs far less)",
    )
    args = parser.parse_args(argv)
    host = urllib.parse.urlsplit(args.url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        parser.error("only loopback URLs: this benchmark sends load")
    wait_healthy(args.url)
    one_run(args.url, 8, 0)  # warm-up
    cpu_before = container_cpu_seconds(args.container) if args.container else None
    results = [one_run(args.url, args.max_tokens, seed, args.temperature) for seed in range(1, args.runs + 1)]
    cpu_after = container_cpu_seconds(args.container) if args.container else None
    for i, r in enumerate(results, 1):
        print(
            f"run {i}: {r['completion_tokens']} tokens (prompt {r['prompt_tokens']}), "
            f"first token {r['ttft_s'] * 1000:.0f} ms, decode {r['decode_tps']:.1f} tok/s, "
            f"overall {r['overall_tps']:.1f} tok/s"
        )
    print(
        f"median of {len(results)}: decode {statistics.median(r['decode_tps'] for r in results):.1f} tok/s, "
        f"overall {statistics.median(r['overall_tps'] for r in results):.1f} tok/s, "
        f"first token {statistics.median(r['ttft_s'] for r in results) * 1000:.0f} ms"
    )
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        tokens = sum(r["completion_tokens"] for r in results)
        prompt = sum(r["prompt_tokens"] for r in results)
        print(
            f"container CPU time: {cpu_after - cpu_before:.2f} s for {tokens} generated + {prompt} prompt tokens "
            f"= {tokens / (cpu_after - cpu_before):.1f} generated tokens per CPU-second"
        )
    try:
        load = os.getloadavg()[0]
        print(f"load average during the run: {load:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
