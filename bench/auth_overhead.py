"""What authentication adds to a /v1 request: p50 latency per auth mode next to the open /v1.

    .venv/bin/python bench/auth_overhead.py [--requests 2000] [--store sqlite|URL]

The real app (build_app: every middleware, the real store on a temporary SQLite file), on the
node's own runtime (uvloop, and the garbage collector tuned as `infernet-node run` tunes it), serves
the real POST /v1/chat/completions, in front of the trivial chat service
(tests/support/chat_service.py) as a process: every call is a stored job with its usage record.
One app per mode runs side by side, each on its own store; the difference between modes is the
auth path alone: signature verification, the replay INSERT, the key lookup, the quota
statement. One client sends the requests one at a time over keep-alive connections, the modes
taking turns request by request in a shuffled order, so that a busy machine's moments fall on
every mode alike; signatures are made before the clock starts. Figures: p50 and p90 in ms, the
p50 over `none` (loopback, no credentials: the open /v1), the ratio of the p50s; and the median
CPU time this process (client, node, store threads; not the chat service) spends per request. With --store URL
(PostgreSQL) the apps share that database.

--pieces adds two experiments to weigh a signed call's parts in the same run: `signatures-unchecked`
(the curve's check always passes) and `signatures-unreplayed` (no replay INSERT). They patch one
app each and are not modes a node has: never run a node like that.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from coincurve import PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.api.auth import AUTH
from node.app import build_app
from node.auth.bech32 import address_of
from node.auth.keys import ApiKey, hash_secret, new_secret
from node.auth.quotas import Limits
from node.auth.service import AuthService
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


def unchecked(service: AuthService) -> None:
    """The curve's check always passes (everything else as it is)."""
    verifier = service._verifier
    assert verifier is not None
    verifier._signed_by = lambda signature, message, payload, remember: True  # type: ignore[method-assign]


def unreplayed(service: AuthService) -> None:
    """The admission without the replay INSERT (everything else as it is)."""
    repository = service._repository
    admit = repository.admit
    repository.admit = lambda request, gate=None: admit(replace(request, signature=None), gate)  # type: ignore[method-assign]


PIECES = {"signatures-unchecked": unchecked, "signatures-unreplayed": unreplayed}


async def start_node(name: str, auth: dict[str, Any], secret: str, store: str, port: int, chat: str) -> web.AppRunner:
    """The real app for one mode, on its own store and port."""
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
    if name.startswith("keys"):
        limits = Limits(rpm=BIG, tpm=BIG, token_budget=BIG) if "limited" in name else Limits()
        # A name of this run's own: a shared database keeps the keys of earlier runs.
        key = ApiKey(f"{name}-{uuid.uuid4().hex[:8]}", hash_secret(secret), time.time(), limits=limits)
        assert await auth_repository(engine).add_key(key)
    await engine.dispose()
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per mode")
    parser.add_argument("--store", default="sqlite", help="sqlite (a file per mode), or a URL the modes share")
    parser.add_argument("--pieces", action="store_true", help="add the two experiments (above)")
    options = parser.parse_args()
    from node.cli import tune_gc
    from tests.support.processes import free_port, service_process

    count = options.requests
    secret, limited_secret = new_secret(), new_secret()  # apart: the modes may share one store
    modes: list[tuple[str, dict[str, Any], Any]] = [
        ("none", {}, lambda: [{}] * count),
        ("keys", {"v1": "keys"}, lambda: [{"Authorization": f"Bearer {secret}"}] * count),
        ("keys-limited", {"v1": "keys"}, lambda: [{"Authorization": f"Bearer {limited_secret}"}] * count),
        (
            "signatures",
            {"v1": "signatures", "gonka": {"address": NODE}},
            lambda: [signed(time.time_ns() + i) for i in range(count)],
        ),
        (
            "signatures-limited",
            {"v1": "signatures", "gonka": {"address": NODE, "limits": {"rpm": BIG, "tpm": BIG, "token_budget": BIG}}},
            lambda: [signed(time.time_ns() + i) for i in range(count)],
        ),
    ]
    if options.pieces:
        signing = {"v1": "signatures", "gonka": {"address": NODE}}
        for experiment in PIECES:
            modes.append((experiment, signing, lambda: [signed(time.time_ns() + i) for i in range(count)]))
    latency: dict[str, list[float]] = {name: [] for name, _, _ in modes}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in modes}
    with service_process("chat") as chat, tempfile.TemporaryDirectory() as tmp:
        urls: dict[str, str] = {}
        runners: list[web.AppRunner] = []
        try:
            for name, auth, _ in modes:
                port = free_port()
                store = f"sqlite+aiosqlite:///{tmp}/{name}.db" if options.store == "sqlite" else options.store
                key_secret = limited_secret if name == "keys-limited" else secret
                runners.append(await start_node(name, auth, key_secret, store, port, chat))
                if name in PIECES:
                    PIECES[name](runners[-1].app[AUTH])
                urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
            headers = {name: make() for name, _, make in modes}  # signed before the clock starts
            tune_gc()  # once the apps are built, as `infernet-node run` does
            order = [name for name, _, _ in modes]
            async with ClientSession() as session:
                for index in range(count):
                    random.shuffle(order)  # request by request, so the modes share the machine's moments
                    for name in order:
                        sent = {**headers[name][index], "Content-Type": "application/json"}
                        started, cpu_started = time.perf_counter(), time.process_time()
                        async with session.post(urls[name], data=BODY, headers=sent) as response:
                            await response.read()
                            assert response.status == 200, (name, response.status, await response.text())
                        if index >= count // 10:  # the first tenth warms up
                            latency[name].append((time.perf_counter() - started) * 1000)
                            cpu[name].append((time.process_time() - cpu_started) * 1000)
        finally:
            for runner in runners:
                await runner.cleanup()
    base = statistics.median(latency["none"])
    base_cpu = statistics.median(cpu["none"])
    print(f"{'mode':<22} {'p50 ms':>8} {'p90 ms':>8} {'p50 - none':>11} {'ratio':>6} {'CPU ms/req':>11} {'- none':>7}")
    for name, timings in latency.items():
        p50 = statistics.median(timings)
        p90 = statistics.quantiles(timings, n=10)[-1]
        used = statistics.median(cpu[name])
        row = f"{p50:8.3f} {p90:8.3f} {p50 - base:+11.3f} {p50 / base:6.2f}"
        print(f"{name:<22} {row} {used:11.3f} {used - base_cpu:+7.3f}")


if __name__ == "__main__":
    from node.cli import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
