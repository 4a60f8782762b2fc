"""Who may sign delegated subscriptions for an owner: its `getSigner()`, read from the chain and cached.

The coordinator accepts a delegated subscription only when the EIP-712 signer is the
owner's `getSigner()` (chain.md §6), so the node checks the same before it answers.
Signers rarely change, so a read is kept for `ttl` seconds; a signature that does not
match a cached signer is checked again against a read at most `recheck` seconds old,
so a consumer that just rotated its signer is not refused on a stale answer, and a
flood of forged signatures costs one read per owner per `recheck` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from web3.exceptions import BadFunctionCallOutput

from node.chain.reverts import as_revert
from node.chain.subscription import ZERO_ADDRESS


async def read_signer(get_signer: Callable[[str], Awaitable[str]], owner: str) -> str:
    """The owner's `getSigner()`, or the zero address when it has none (a revert, or no contract
    code there): nobody may sign for it. Any other error (the RPC is down) is raised."""
    try:
        return await get_signer(owner)
    except BadFunctionCallOutput:  # no code at the address, or no such function: empty return data
        return ZERO_ADDRESS
    except Exception as error:
        if as_revert(error) is None:
            raise
        return ZERO_ADDRESS


class SignerCache:
    def __init__(
        self,
        read: Callable[[str], Awaitable[str]],
        ttl: float = 60.0,
        recheck: float = 2.0,
        size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._recheck = recheck
        self._size = size
        self._clock = clock
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()  # owner -> (signer, read at)
        self._reading: dict[str, asyncio.Future[str]] = {}

    async def matches(self, owner: str, signer: str) -> tuple[bool, str]:
        """(whether `signer` may sign for `owner`, the owner's signer as last read)."""
        expected = await self._get(owner, self._ttl)
        if expected.lower() != signer.lower():
            expected = await self._get(owner, self._recheck)
        return expected.lower() == signer.lower(), expected

    async def _get(self, owner: str, max_age: float) -> str:
        key = owner.lower()
        known = self._known.get(key)
        if known is not None and self._clock() - known[1] <= max_age:
            self._known.move_to_end(key)
            return known[0]
        reading = self._reading.get(key)
        if reading is None:  # one read per owner at a time; the others wait for it
            reading = asyncio.ensure_future(self._fetch(key, owner))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(reading)

    async def _fetch(self, key: str, owner: str) -> str:
        signer = await self._read(owner)
        self._known[key] = (signer, self._clock())
        self._known.move_to_end(key)
        while len(self._known) > self._size:
            self._known.popitem(last=False)
        return signer
