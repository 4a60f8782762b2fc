"""The owner-signer cache: one chain read per owner while fresh, a recheck before refusing, bounded."""

from __future__ import annotations

import asyncio

from node.chain.signers import SignerCache

A, B = "0x" + "aa" * 20, "0x" + "bb" * 20


class Chain:
    """Stands in for getSigner() reads (the adapter boundary): counts them, answers `signers`."""

    def __init__(self, signers: dict[str, str]) -> None:
        self.signers = signers
        self.reads: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self, owner: str) -> str:
        self.reads.append(owner)
        await self.gate.wait()
        return self.signers[owner]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_match_is_answered_from_the_cache_until_the_ttl() -> None:
    chain, clock = Chain({"owner": A}), Clock()
    cache = SignerCache(chain.read, ttl=60, recheck=2, clock=clock)
    assert await cache.matches("owner", A.upper().replace("0X", "0x")) == (True, A)  # case-insensitive
    clock.now += 59
    assert await cache.matches("OWNER", A) == (True, A)
    assert chain.reads == ["owner"]
    clock.now += 2
    assert await cache.matches("owner", A) == (True, A)
    assert len(chain.reads) == 2


async def test_a_mismatch_rereads_unless_the_last_read_is_fresh() -> None:
    chain, clock = Chain({"owner": A}), Clock()
    cache = SignerCache(chain.read, ttl=60, recheck=2, clock=clock)
    assert await cache.matches("owner", B) == (False, A)
    assert await cache.matches("owner", B) == (False, A)
    assert len(chain.reads) == 1  # a flood of forged signatures: one read per `recheck` seconds
    chain.signers["owner"] = B  # the consumer rotated its signer
    clock.now += 3
    assert await cache.matches("owner", B) == (True, B)
    assert len(chain.reads) == 2


async def test_concurrent_lookups_share_one_read_and_errors_reach_every_caller() -> None:
    chain = Chain({"owner": A})
    cache = SignerCache(chain.read, clock=Clock())
    chain.gate.clear()
    waiting = [asyncio.ensure_future(cache.matches("owner", A)) for _ in range(5)]
    await asyncio.sleep(0.01)
    chain.gate.set()
    assert await asyncio.gather(*waiting) == [(True, A)] * 5
    assert chain.reads == ["owner"]

    async def down(owner: str) -> str:
        raise ConnectionError("rpc down")

    broken = SignerCache(down, clock=Clock())
    results = await asyncio.gather(*(broken.matches("x", A) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)


async def test_the_cache_keeps_at_most_size_owners() -> None:
    chain = Chain({f"o{n}": A for n in range(10)})
    cache = SignerCache(chain.read, size=3, clock=Clock())
    for n in range(10):
        await cache.matches(f"o{n}", A)
    await cache.matches("o9", A)  # still cached
    await cache.matches("o0", A)  # evicted: read again
    assert chain.reads == [f"o{n}" for n in range(10)] + ["o0"]
