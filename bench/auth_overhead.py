"""What authentication adds to a /v1 request: p50 latency per auth mode next to the open surface.

    .venv/bin/python bench/auth_overhead.py [--requests 2000] [--store sqlite|URL]

The real app (build_app: every middleware, the real store on a temporary SQLite file, or the
PostgreSQL URL given) serves a trivial POST /v1/bench handler (it reads the body and reports
usage, as a /v1 handler does), so the difference between modes is the auth path alone:
signature recovery, the replay INSERT, the key lookup, the quota statement, the usage record.
One client sends the requests one at a time over a keep-alive connection; signatures are made
before the clock starts. Figures are medians (p50) and p90 in milliseconds, and the overhead
over `none` (loopback, no credentials: the open surface).
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

from node.api.auth import record_usage
from node.app import build_app
from node.auth.bech32 import address_of
from node.auth.keys import ApiKey, hash_secret, new_secret
from node.auth.quotas import Limits
from node.config import parse_config
from node.store.auth_repository import SqlAuthRepository
from node.store.engine import create_engine, migrate

NODE = address_of(PrivateKey(bytes.fromhex("33" * 32)).public_key.format())
USER = PrivateKey(bytes.fromhex("11" * 32))
BODY = b'{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":8}'
BIG = 10**12


async def handler(request: web.Request) -> web.Response:
    body = await request.read()
    record_usage(request, request.headers["X-Job"], "m", len(body), 8)
    return web.json_response({"ok": True})


def signed(timestamp: int) -> dict[str, str]:
    message = hashlib.sha256(BODY).hexdigest().encode() + str(timestamp).encode() + NODE.encode()
    return {
        "Authorization": base64.b64encode(USER.sign_recoverable(message)[:64]).decode(),
        "X-Requester-Address": address_of(USER.public_key.format()),
        "X-Timestamp": str(timestamp),
    }


async def measure(name: str, auth: dict[str, Any], headers: list[dict[str, str]], store: str, port: int) -> list[float]:
    raw = {
        "log": {"path": None, "level": "WARNING"},
        "server": {"host": "127.0.0.1", "port": port, "rate_limit": {"num_requests": 0}},
        "store": {"url": store},
        "auth": auth,
    }
    config = parse_config(raw, environ={})
    engine = create_engine(store)
    await migrate(engine)
    secret_holder = headers[0].get("Authorization", "")
    if secret_holder.startswith("Bearer "):
        limits = Limits(rpm=BIG, tpm=BIG, token_budget=BIG) if "limited" in name else Limits()
        key = ApiKey(name, hash_secret(secret_holder[7:]), time.time(), limits=limits)
        await SqlAuthRepository(engine).add_key(key)
    await engine.dispose()
    app = build_app(config)
    app.router.add_post("/v1/bench", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    timings = []
    try:
        async with ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/bench"
            for index, extra in enumerate(headers):
                started = time.perf_counter()
                async with session.post(url, data=BODY, headers={**extra, "X-Job": f"{name}-{index}"}) as response:
                    await response.read()
                    assert response.status == 200, (name, response.status, await response.text())
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        await runner.cleanup()
    return timings[len(timings) // 10 :]  # the first tenth warms up


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--store", default="sqlite")
    parser.add_argument("--rounds", type=int, default=2, help="each mode runs this many times, interleaved")
    options = parser.parse_args()
    from tests.support.processes import free_port

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
    for round_ in range(options.rounds):
        for name, auth, make_headers in modes:
            with tempfile.TemporaryDirectory() as tmp:
                store = f"sqlite+aiosqlite:///{tmp}/node.db" if options.store == "sqlite" else options.store
                label = f"{name}-{round_}" if options.store != "sqlite" else name
                results[name] += await measure(label, auth, make_headers(), store, free_port())
    base = statistics.median(results["none"])
    print(f"{'mode':<20} {'p50 ms':>8} {'p90 ms':>8} {'p50 - none':>11}")
    for name, timings in results.items():
        p50 = statistics.median(timings)
        p90 = statistics.quantiles(timings, n=10)[-1]
        print(f"{name:<20} {p50:8.3f} {p90:8.3f} {p50 - base:+11.3f}")


if __name__ == "__main__":
    asyncio.run(main())
