"""Three nodes on one PostgreSQL, anvil and a slow service that logs every call, under a steady
load of REST jobs and on-chain subscriptions, while nodes are `kill -9`ed (the chain leader among
them) and restarted. Then:

- every acknowledged job is final, the same on every node; none ran twice at the service unless
  its container is declared safe to retry; the only failures are "node … died" / restarted;
- every (subscription, interval) was delivered exactly once on chain;
- no delivery transaction of the wallet reverted, and it sent no other transaction.

The kills follow a fixed seed (the plan is logged, with what was killed when); run alone with
`pytest -m chaos`.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.chain.helpers import ChainNode, deliveries, node_chain_config, wait_until
from tests.support.chain import (  # noqa: F401  (pytest finds fixtures by name)
    Anvil,
    InfernetDeployment,
    anvil,
    anvil_accounts,
    anvil_w3,
    chain_snapshot,
    create_callback,
    create_recurring,
    increase_time,
    infernet_chain,
    infernet_consumer,
)
from tests.support.cluster import ClusterNodes, call, database, service_calls  # noqa: F401
from tests.support.postgres import postgres_server  # noqa: F401
from tests.support.processes import NodeProcess, service_process

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="session")]

SEED = 1414
CHAOS_SECONDS = 70.0
PERIOD = 600  # recurring subscriptions: the test moves chain time one period at a time
FREQUENCY = 4
RESTARTED = "node restarted while the job was running"
DIED = re.compile(r"^node node-[123] died while the job was running$")


@dataclass
class Load:
    """What the load generators sent and what the nodes acknowledged."""

    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # job id -> (container, marker)
    refused: int = 0  # no id came back (node down, connection cut): not acknowledged
    callbacks: list[int] = field(default_factory=list)
    recurring: list[int] = field(default_factory=list)
    intervals: int = 0  # recurring intervals opened so far
    events: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def log(self, text: str) -> None:
        line = f"t={time.monotonic() - self.started:6.1f}s {text}"
        self.events.append(line)
        print(line, flush=True)


async def _jobs(nodes: ClusterNodes, load: Load, stop: asyncio.Event, rng: random.Random) -> None:
    """~6 REST jobs a second on random live nodes: most on `slow`, some on `again` (safe to retry)."""
    count = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not stop.is_set():
            alive = nodes.alive()
            if alive:
                count += 1
                node = rng.choice(alive)
                container = "again" if rng.random() < 0.2 else "slow"
                marker = f"job-{count}"
                data = {"marker": marker, "sleep": rng.choice([0, 0, 0.3, 1, 2.5])}
                try:
                    async with session.post(
                        f"{node.url}/api/jobs", json={"containers": [container], "data": data}
                    ) as response:
                        body = await response.json()
                    if response.status == 200 and "id" in body:
                        load.acked[body["id"]] = (container, marker)
                    else:
                        load.refused += 1
                except (aiohttp.ClientError, TimeoutError):
                    load.refused += 1
            await asyncio.sleep(0.15)


async def _subscriptions(
    w3: Any, consumer: Any, sender: str, load: Load, stop: asyncio.Event, intervals_done: Callable[[], Awaitable[bool]]
) -> None:
    """A callback subscription every second; every ~12 s the next interval of the recurring ones,
    once the current one is delivered (a missed interval would be lost for good)."""
    last_step = time.monotonic()
    while not stop.is_set():
        load.callbacks.append(await create_callback(consumer, sender, ["echo"], f"cb-{len(load.callbacks)}".encode()))
        if load.intervals < FREQUENCY and time.monotonic() - last_step > 12:
            await wait_until(intervals_done, timeout=40, what=f"recurring interval {load.intervals}")
            await increase_time(w3, PERIOD)
            load.intervals += 1
            load.log(f"chain time +{PERIOD}s: recurring interval {load.intervals} opens")
            last_step = time.monotonic()
        await asyncio.sleep(1.0)


def _leader(nodes: ClusterNodes, wallet: str) -> str | None:
    for node in nodes.alive():
        try:
            roles = call(f"{node.url}/info", timeout=3)["cluster"]["roles"]
        except OSError:
            continue
        for role in roles:
            if role["lease"] == f"chain:{wallet.lower()}":
                return str(role["holder"])
    return None


async def _chaos(nodes: ClusterNodes, wallet: str, load: Load, rng: random.Random) -> list[str]:
    """Every 5-8 s: restart the dead, then kill -9 one node (the chain leader on steps 0, 3, 6...),
    sometimes two. Returns the ids of the leaders killed."""
    leaders_killed = []
    end = time.monotonic() + CHAOS_SECONDS
    step = 0
    while time.monotonic() < end:
        await asyncio.sleep(rng.uniform(5, 8))
        for node in nodes.nodes:
            if node not in nodes.alive():
                load.log(f"restart {node.workdir.name}")
                await asyncio.to_thread(node.start)
        leader = await asyncio.to_thread(_leader, nodes, wallet)
        # The same draws on every run, whoever leads: the plan depends on the seed alone.
        pick, two, other = rng.choice(nodes.nodes), rng.random() < 0.25, rng.randrange(2)
        victims: list[NodeProcess] = [pick]
        if step % 3 == 0 and leader is not None and nodes.by_id(leader) in nodes.alive():
            victims = [nodes.by_id(leader)]
        if two:
            victims.append([node for node in nodes.nodes if node not in victims][other])
        leaders_killed += [victim.workdir.name for victim in victims if victim.workdir.name == leader]
        for victim in victims:
            role = " (the chain leader)" if victim.workdir.name == leader else ""
            load.log(f"kill -9 {victim.workdir.name}{role}")
            victim.kill()
        step += 1
    for node in nodes.nodes:
        if node not in nodes.alive():
            load.log(f"restart {node.workdir.name} (chaos over)")
            await asyncio.to_thread(node.start)
    return leaders_killed


async def _reverted(w3: Any, wallet: str, first_block: int) -> tuple[int, int]:
    """(transactions the wallet sent since first_block, how many of them reverted)."""
    sent = reverted = 0
    latest = await w3.eth.block_number
    for number in range(first_block + 1, latest + 1):
        block = await w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["from"].lower() == wallet.lower():
                sent += 1
                receipt = await w3.eth.get_transaction_receipt(tx["hash"])
                reverted += receipt["status"] == 0
    return sent, reverted


async def _final(nodes: ClusterNodes, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The jobs as node-1 has them, once none is pending (polled in batches)."""
    results: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        query = "&".join(f"id={job_id}" for job_id in ids[start : start + 100])
        for item in await asyncio.to_thread(call, f"{nodes.nodes[0].url}/api/jobs?{query}"):
            results[item["id"]] = item
    return results


async def test_three_nodes_under_load_with_kill_9_lose_and_double_nothing(
    tmp_path: Path,
    anvil: Anvil,  # noqa: F811
    anvil_w3: Any,  # noqa: F811
    anvil_accounts: list[Any],  # noqa: F811
    infernet_chain: InfernetDeployment,  # noqa: F811
    infernet_consumer: Any,  # noqa: F811
    database: str,  # noqa: F811
) -> None:
    rng = random.Random(SEED)
    wallet = anvil_accounts[1].address
    sender = anvil_accounts[0].address
    calls_file = tmp_path / "calls.jsonl"
    load = Load()
    with (
        service_process("hello-world") as echo_url,
        service_process("slow", env={"CALLS_FILE": str(calls_file)}) as slow_url,
    ):

        def config(workdir: Path, port: int) -> dict[str, Any]:
            built = node_chain_config(
                workdir,
                rpc_url=anvil.url,
                registry=infernet_chain.registry_address,
                private_key=anvil_accounts[1].key.to_0x_hex(),
                echo_url=echo_url,
                slow_url=slow_url,
                containers=[{"id": "again", "url": slow_url, "retry_interrupted": True}],
            )
            built["server"]["port"] = port
            built["jobs"] = {**built["jobs"], "workers": 6}
            return built

        nodes = ClusterNodes(tmp_path, database, 3, config, make=ChainNode)
        first_block = await anvil_w3.eth.block_number
        try:
            await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes.nodes))
            load.log("three nodes up")
            load.recurring = [
                await create_recurring(infernet_consumer, sender, ["echo"], frequency=FREQUENCY, period=PERIOD)
                for _ in range(3)
            ]

            async def delivered_keys() -> set[tuple[int, int]]:
                return {(d.subscription_id, d.interval) for d in await deliveries(infernet_consumer)}

            async def intervals_done() -> bool:
                have = await delivered_keys()
                return all((sub, load.intervals) in have for sub in load.recurring) if load.intervals else True

            stop = asyncio.Event()
            generators = [
                asyncio.create_task(_jobs(nodes, load, stop, random.Random(SEED + 1))),
                asyncio.create_task(_subscriptions(anvil_w3, infernet_consumer, sender, load, stop, intervals_done)),
            ]
            try:
                leaders_killed = await _chaos(nodes, wallet, load, rng)
            finally:
                stop.set()
                await asyncio.gather(*generators)
            load.log(f"the chain leader killed {len(leaders_killed)} times: {leaders_killed}")
            assert leaders_killed, "the chain leader was never killed"
            # The last recurring intervals, after the chaos, with every node back.
            while load.intervals < FREQUENCY:
                await wait_until(intervals_done, timeout=40, what=f"recurring interval {load.intervals}")
                await increase_time(anvil_w3, PERIOD)
                load.intervals += 1
            expected = {(sub, 1) for sub in load.callbacks} | {
                (sub, interval) for sub in load.recurring for interval in range(1, FREQUENCY + 1)
            }

            async def all_delivered() -> bool:
                return expected <= await delivered_keys()

            await wait_until(all_delivered, timeout=60, what="every subscription's deliveries")
            ids = list(load.acked)

            async def all_final() -> bool:
                return all(item["status"] != "running" for item in (await _final(nodes, ids)).values())

            await wait_until(all_final, timeout=60, interval=1.0, what="every acknowledged job to end")
            await asyncio.sleep(2.0)  # a duplicate delivery or late call gets every chance to show
            load.log(f"{len(ids)} jobs acknowledged ({load.refused} not), {len(expected)} deliveries expected")

            # Jobs: all there, final, the same on every node.
            results = await _final(nodes, ids)
            assert set(results) == set(ids), f"lost jobs: {set(ids) - set(results)}"
            for other in nodes.nodes[1:]:
                for start in range(0, len(ids), 100):
                    query = "&".join(f"id={job_id}" for job_id in ids[start : start + 100])
                    for item in await asyncio.to_thread(call, f"{other.url}/api/jobs?{query}"):
                        assert item == results[item["id"]], (other.workdir.name, item, results[item["id"]])
            received = service_calls(calls_file)
            failed: dict[str, int] = {}
            for job_id, (container, marker) in load.acked.items():
                item = results[job_id]
                if item["status"] == "success":
                    assert item["result"]["output"]["marker"] == marker
                    assert received[marker] >= 1
                else:
                    assert item["status"] == "failed", item
                    error = item["result"]["error"]
                    assert DIED.match(error) or error == RESTARTED, item
                    assert container == "slow", f"a job safe to retry failed: {item}"
                    failed[error] = failed.get(error, 0) + 1
            # Nothing reached the service twice, but jobs declared safe to retry (unacknowledged ones too).
            retryable = {marker for container, marker in load.acked.values() if container == "again"}
            twice = {m: n for m, n in received.items() if n > 1 and m not in retryable}
            assert twice == {}, f"jobs that ran more than once: {twice}"
            reruns = sum(received[marker] - 1 for marker in retryable if received[marker] > 1)
            load.log(f"failed jobs by reason: {failed}; reruns of jobs safe to retry: {reruns}")

            # Chain: each (subscription, interval) once; every transaction of the wallet a delivery that held.
            found = await deliveries(infernet_consumer)
            keys = [(d.subscription_id, d.interval) for d in found]
            assert len(keys) == len(set(keys)), f"delivered twice: {[k for k in set(keys) if keys.count(k) > 1]}"
            assert set(keys) == expected
            sent, reverted = await _reverted(anvil_w3, wallet, first_block)
            load.log(f"wallet: {sent} transactions, {reverted} reverted, {len(found)} deliveries")
            assert reverted == 0
            assert sent == len(found)
        except BaseException:
            print("\n".join(load.events))
            nodes.dump_logs(2500)
            raise
        finally:
            nodes.kill_all()
