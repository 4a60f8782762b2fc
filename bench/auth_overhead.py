"""What authentication adds to a /v1 request: p50 latency per auth mode next to the open /v1.

    .venv/bin/python bench/auth_overhead.py [--requests 2000] [--store sqlite|URL]

The real app (build_app: every middleware, the real store on a temporary SQLite file, or the
PostgreSQL URL given) serves the real POST /v1/chat/completions, in front of the trivial chat
service (tests/support/chat_service.py) as a process: every call is a stored job with its usage
record. The difference between modes is the auth path alone: signature verification, the replay
INSERT, the key lookup, the quota statement. One client sends the requests one at a time over a
keep-alive connection; signatures are made before the clock starts; the modes take turns, so
they share the machine's noise. Figures: p50 and p90 in ms, the p50 over `none` (loopback, no
credentials: the open /v1), the ratio of the p50s; and the CPU time this process (client, node,
store threads; not the chat service) spends per request, which a busy machine disturbs far less
than latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from coincurve import PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.app import build_app
from node.auth.bech32 import address_of
from node.auth.keys import ApiKey, hash_secret, new_secret
from node.auth.quotas import Limits
from node.config import parse_config
from node.store.engine import create_engine, migrate
from node.store.repositories import auth_repository

NODE = address_of(PrivateKey(bytes.fromhex("33" * 32)).public_key.format())
USER = PrivateKey(bytes.fromhex("11" * 32))
BODY = b'{"model":"tiny","messages":[{"role":"user","content":"hello there"}],"max_tokens":8}'
BIG = 10**12


def signed(timestamp: int) -> dict[str, str]:
    message = hashlib.sha256(BODY).hexdigest().encode() + str(timestamp).encode() + NODE.encode()
    return {
        "Authorization": base64.b64encode(USER.sign_recoverable(message)[:64]).decode(),
        "X-Requester-Address": address_of(USER.public_key.format()),
        "X-Timestamp": str(timestamp),
    }


async def measure(
    name: str, auth: dict[str, Any], headers: list[dict[str, str]], store: str, port: int, chat: str
) -> tuple[list[float], float]:
    """Latencies (ms) and this process's CPU time per request (ms: client, node and its store threads)."""
    raw = {
        "log": {"path": None, "level": "WARNING"},
        "server": {"host": "127.0.0.1", "port": port, "rate_limit": {"num_requests": 0}},
        "store": {"url": store},
        "containers": [{"id": "chat", "url": chat, "models": ["tiny"]}],
        "auth": auth,
    }
    config = parse_config(raw, environ={})
    engine = create_engine(store)
    await migrate(engine)
    secret_holder = headers[0].get("Authorization", "")
    if secret_holder.startswith("Bearer "):
        limits = Limits(rpm=BIG, tpm=BIG, token_budget=BIG) if "limited" in name else Limits()
        key = ApiKey(name, hash_secret(secret_holder[7:]), time.time(), limits=limits)
        await auth_repository(engine).add_key(key)
    await engine.dispose()
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    timings = []
    try:
        async with ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            cpu = 0.0
            for index, extra in enumerate(headers):
                if index == len(headers) // 10:
                    cpu = time.process_time()
                started = time.perf_counter()
                sent = {**extra, "Content-Type": "application/json"}
                async with session.post(url, data=BODY, headers=sent) as response:
                    await response.read()
                    assert response.status == 200, (name, response.status, await response.text())
                timings.append((time.perf_counter() - started) * 1000)
            measured = len(headers) - len(headers) // 10
            cpu = (time.process_time() - cpu) * 1000 / measured
    finally:
        await runner.cleanup()
    return timings[len(timings) // 10 :], cpu  # the first tenth warms up


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--store", default="sqlite")
    parser.add_argument("--rounds", type=int, default=2, help="each mode runs this many times, interleaved")
    options = parser.parse_args()
    from tests.support.processes import free_port, service_process

    count = options.requests
    secret = new_secret()
    modes: list[tuple[str, dict[str, Any], Any]] = [
        ("none", {}, lambda: [{}] * count),
        ("keys", {"v1": "keys"}, lambda: [{"Authorization": f"Bearer {secret}"}] * count),
        ("keys-limited", {"v1": "keys"}, lambda: [{"Authorization": f"Bearer {secret}"}] * count),
        ("signatures", {"v1": "signatures", "gonka": {"address": NODE}},
         lambda: [signed(time.time_ns() + i) for i in range(count)]),
        ("signatures-limited",
         {"v1": "signatures", "gonka": {"address": NODE, "limits": {"rpm": BIG, "tpm": BIG, "token_budget": BIG}}},
         lambda: [signed(time.time_ns() + i) for i in range(count)]),
    ]
    results: dict[str, list[float]] = {name: [] for name, _, _ in modes}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in modes}
    with service_process("chat") as chat:
        for round_ in range(options.rounds):
            for name, auth, make_headers in modes:
                with tempfile.TemporaryDirectory() as tmp:
                    store = f"sqlite+aiosqlite:///{tmp}/node.db" if options.store == "sqlite" else options.store
                    label = f"{name}-{round_}" if options.store != "sqlite" else name
                    timings, cpu_ms = await measure(label, auth, make_headers(), store, free_port(), chat)
                    results[name] += timings
                    cpu[name].append(cpu_ms)
    base = statistics.median(results["none"])
    base_cpu = min(cpu["none"])
    print(f"{'mode':<20} {'p50 ms':>8} {'p90 ms':>8} {'p50 - none':>11} {'ratio':>6} {'CPU ms/req':>11} {'- none':>7}")
    for name, timings in results.items():
        p50 = statistics.median(timings)
        p90 = statistics.quantiles(timings, n=10)[-1]
        # The least CPU of the rounds: other processes can only add to it (cache misses, migrations).
        used = min(cpu[name])
        latency = f"{p50:8.3f} {p90:8.3f} {p50 - base:+11.3f} {p50 / base:6.2f}"
        print(f"{name:<20} {latency} {used:11.3f} {used - base_cpu:+7.3f}")


if __name__ == "__main__":
    asyncio.run(main())
