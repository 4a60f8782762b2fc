"""From an on-chain container-set hash back to container ids.

The coordinator stores keccak256(abi.encode(string "id1,id2,...")), which cannot be
inverted, so the node hashes every ordered chain it could serve: each permutation of
each non-empty subset of its container ids (chain.md §2). That grows like n!, so the
table is capped: chains are added by length (1, 2, ...) while they fit.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence

from eth_utils import keccak

from node.chain.subscription import hash_bytes

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 50_000
_OFFSET = (32).to_bytes(32, "big")


def containers_hash(containers: Sequence[str] | str) -> bytes:
    """keccak256(abi.encode(string)): offset word, length word, then the UTF-8 bytes zero-padded."""
    joined = containers if isinstance(containers, str) else ",".join(containers)
    data = joined.encode("utf-8")
    return keccak(_OFFSET + len(data).to_bytes(32, "big") + data + b"\0" * (-len(data) % 32))


def chains_of_length(n: int, r: int) -> int:
    return math.perm(n, r)


class ContainerLookup:
    def __init__(self, container_ids: Sequence[str], max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        ids = list(dict.fromkeys(container_ids))
        self._table: dict[bytes, list[str]] = {}
        self.max_length = 0
        total = 0
        for length in range(1, len(ids) + 1):
            count = chains_of_length(len(ids), length)
            if length > 1 and total + count > max_entries:
                log.warning(
                    "container lookup: chains of %d or more containers are not served "
                    "(%d ids would need more than %d hashes)",
                    length,
                    len(ids),
                    max_entries,
                )
                break
            for chain in itertools.permutations(ids, length):
                self._table[containers_hash(chain)] = list(chain)
            total += count
            self.max_length = length

    def __len__(self) -> int:
        return len(self._table)

    def containers(self, hashed: str | bytes) -> list[str]:
        """The chain of container ids for a hash, or [] when this node does not know it."""
        try:
            key = hash_bytes(hashed)
        except ValueError:
            return []
        return list(self._table.get(key, ()))
