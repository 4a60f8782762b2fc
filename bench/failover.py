"""Chain failover (issue 14): `kill -9` of the chain leader -> the first delivery by the new leader.

    .venv/bin/python bench/failover.py            # full run: 6 kills, ~2 minutes
    .venv/bin/python bench/failover.py --quick    # 2 kills, ~1 minute
    make bench-failover                           # the first line, after scripts/setup-venv.sh

What runs: anvil with the Infernet test contracts (tests/support/chain.py, as the chain tests
use it), a TestConsumer with one recurring subscription on the echo service (hello-world, a
local process) that is due every `--period` seconds, and two node processes (node-a, node-b)
with one wallet on one fresh PostgreSQL database, with the default `cluster.lease_seconds` and
`renew_seconds`. A thread mines an empty block every 0.2 s so that chain time follows the
clock and an interval falls due every period.

Each kill: wait until one node leads, the other stands by, both heartbeats are alive and the
leader has delivered since the last kill; then SIGKILL the leader and time, on this process's
clock, until the consumer's delivery count grows (polled every 50 ms). The killed node is
started again (it comes back as the standby) and the next kill hits the other one. With the
period shorter than the failover, an interval is always due when the new leader takes over,
so the time measured is the takeover's, not the wait for an interval.

At the end: every (subscription, interval) was delivered once, and the wallet sent one
transaction per delivery (none reverted, none doubled). Target: failover <= 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]
# The node processes (tests/support/processes.py) run from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from harness import Harness, Postgres, cpu_pressure, load_average, prepare  # noqa: E402
from measure import Figure, Results  # noqa: E402

from node.config import ClusterConfig  # noqa: E402
from tests.e2e.chain.helpers import (  # noqa: E402
    ChainNode,
    deliveries,
    node_chain_config,
    node_tx_count,
    wait_until,
)
from tests.support.chain import (  # noqa: E402
    Anvil,
    anvil_available,
    anvil_binary,
    create_recurring,
    deploy_consumer,
    deploy_infernet,
    make_w3,
)

TARGET_S = 10.0
POLL_S = 0.05
TICK_S = 0.2


def sent(node: ChainNode) -> int:
    return sum("sent transaction" in record["message"] for record in node.records())


class Ticker(threading.Thread):
    """Mines an empty block every TICK_S seconds: chain time follows the clock."""

    def __init__(self, anvil: Anvil) -> None:
        super().__init__(daemon=True)
        self.anvil = anvil
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(TICK_S):
            try:
                self.anvil.rpc("evm_mine")
            except Exception:  # anvil stopped under us at the end
                return


class FailoverBench(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(keep=args.keep)
        self.args = args
        self.kills = args.kills or (2 if args.quick else 6)
        self.results = Results(labels=("measured", "target"))
        self.postgres = Postgres()
        self.anvil = Anvil()
        self.ticker: Ticker | None = None
        self.nodes: list[ChainNode] = []

    def node(self, name: str, database: str, registry: str, key: str) -> ChainNode:
        workdir = self.tmp / name
        workdir.mkdir()
        echo = f"http://127.0.0.1:{self.hello_port}"
        config = node_chain_config(
            workdir, rpc_url=self.anvil.url, registry=registry, private_key=key, echo_url=echo, slow_url=echo
        )
        config["store"] = {"url": database}
        config["cluster"] = {"node_id": name}
        node = ChainNode(config, workdir)  # writes its config file
        self.nodes.append(node)
        return node

    async def run_async(self) -> None:
        self.anvil.start()
        w3 = make_w3(self.anvil.url)
        accounts = self.anvil.accounts()
        try:
            chain = await deploy_infernet(w3, accounts[0].address)
            consumer = await deploy_consumer(w3, accounts[0].address, chain.coordinator_address, accounts[9].address)
            database = await asyncio.to_thread(self.postgres.fresh_database)
            wallet = accounts[1]
            a, b = (
                self.node(name, database, chain.registry_address, "0x" + bytes(wallet.key).hex())
                for name in ("node-a", "node-b")
            )
            await asyncio.to_thread(a.start)
            await wait_until(lambda: self._is(a, "leader", alone=True), 30, what="node-a to lead")
            await asyncio.to_thread(b.start)
            leader, standby = a, b
            self.ticker = Ticker(self.anvil)
            self.ticker.start()
            sub_id = await create_recurring(
                consumer, accounts[0].address, ["echo"], frequency=100_000, period=self.args.period
            )
            print(
                f"   subscription {sub_id}: an interval every {self.args.period} s; leases "
                f"{ClusterConfig().lease_seconds:g} s, renewed every {ClusterConfig().renew_seconds:g} s",
                flush=True,
            )
            times: list[float] = []
            for kill in range(1, self.kills + 1):
                await wait_until(partial(self._is, standby, "standby"), 60, what="the standby")
                await wait_until(partial(self._is, leader, "leader"), 60, what="the leader")
                before = await consumer.functions.deliveryCount().call()
                await wait_until(
                    partial(self._count_above, consumer, before), 60, POLL_S, what="a delivery by the leader"
                )
                sent_before = sent(standby)
                leader.kill()
                killed = time.monotonic()
                count = await consumer.functions.deliveryCount().call()
                await wait_until(
                    partial(self._count_above, consumer, count), 60, POLL_S, what="the new leader's delivery"
                )
                failover = time.monotonic() - killed
                assert sent(standby) > sent_before, "the delivery after the kill was not the standby's"
                times.append(failover)
                print(
                    f"   kill {kill}: {leader.config['cluster']['node_id']} killed -> first delivery by "
                    f"{standby.config['cluster']['node_id']} after {failover:.2f} s",
                    flush=True,
                )
                await asyncio.to_thread(leader.start)  # back as the standby
                leader, standby = standby, leader
            self.ticker.stopped.set()
            await asyncio.sleep(1.0)  # the last transactions land
            found = await deliveries(consumer)
            keys = [(d.subscription_id, d.interval) for d in found]
            transactions = await node_tx_count(w3, wallet.address)
            self.report(times, len(keys), len(set(keys)), transactions)
        finally:
            await w3.provider.disconnect()

    async def _is(self, node: ChainNode, role: str, alone: bool = False) -> bool:
        try:
            info = await asyncio.to_thread(node.info)
        except OSError:
            return False
        alive = info["cluster"]["nodes_alive"] >= (1 if alone else 2)
        return alive and info["chain"].get("role") == role

    @staticmethod
    async def _count_above(consumer: Any, count: int) -> bool:
        return bool(await consumer.functions.deliveryCount().call() > count)

    def report(self, times: list[float], delivered: int, distinct: int, transactions: int) -> None:
        p50 = statistics.median(times)
        self.results.add(
            Figure(f"failover min ({len(times)} kills)", "s", min(times), TARGET_S),
            Figure("failover p50", "s", p50, TARGET_S),
            Figure("failover max", "s", max(times), TARGET_S),
        )
        self.results.raw["failover_s"] = times
        self.results.target(
            max(times) <= TARGET_S,
            f"kill -9 of the chain leader -> first delivery by the new leader: min {min(times):.2f} s, "
            f"p50 {p50:.2f} s, max {max(times):.2f} s over {len(times)} kills (target <= {TARGET_S:g} s)",
        )
        self.results.target(
            delivered == distinct == transactions,
            f"{delivered} deliveries, {distinct} distinct (subscription, interval), {transactions} transactions "
            "sent by the wallet: each interval once, nothing reverted or sent twice",
        )

    def close(self) -> None:
        if self.ticker is not None:
            self.ticker.stopped.set()
        for node in self.nodes:
            node.kill()
        self.anvil.stop()
        super().close()
        self.postgres.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 kills (~1 minute)")
    parser.add_argument("--kills", type=int, help="how many kills (default 6, 2 with --quick)")
    parser.add_argument("--period", type=int, default=2, help="seconds between the subscription's intervals")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (node logs)")
    args = parser.parse_args()
    if not anvil_available():
        sys.exit(f"anvil not found at {anvil_binary()}: run `npm ci --prefix tools/chain`")
    prepare(pin_self=None, wrk=False)
    started, load_before, pressure_before = time.monotonic(), load_average(), cpu_pressure()
    bench = FailoverBench(args)
    try:
        print(
            f"bench: work dir {bench.tmp}; anvil, two nodes on one PostgreSQL database, nothing pinned; "
            f"load average {load_before}, CPU pressure {pressure_before}",
            flush=True,
        )
        bench.start_services(cpu=None)
        asyncio.run(bench.run_async())
    finally:
        bench.close()
    bench.results.report(
        f"summary ({time.monotonic() - started:.0f} s; load average {load_before} at the start, {load_average()} "
        f"at the end; CPU pressure {pressure_before} -> {cpu_pressure()})",
        args.json,
    )


if __name__ == "__main__":
    main()
