"""Bech32 (BIP-173) encoding of addresses, and the Gonka address of a public key.

Only the checksum and the 5-bit regrouping: no curve arithmetic here.
"""

from __future__ import annotations

import hashlib

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
GONKA_PREFIX = "gonka"


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            checksum ^= _GENERATOR[bit] if (top >> bit) & 1 else 0
    return checksum


def _expand(prefix: str) -> list[int]:
    return [ord(char) >> 5 for char in prefix] + [0] + [ord(char) & 31 for char in prefix]


def _to_5bit(data: bytes) -> list[int]:
    accumulator, bits, out = 0, 0, []
    for byte in data:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((accumulator >> bits) & 31)
    if bits:
        out.append((accumulator << (5 - bits)) & 31)
    return out


def encode(prefix: str, data: bytes) -> str:
    words = _to_5bit(data)
    polymod = _polymod([*_expand(prefix), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - index)) & 31 for index in range(6)]
    return prefix + "1" + "".join(CHARSET[word] for word in words + checksum)


def decode(address: str, prefix: str = GONKA_PREFIX) -> bytes | None:
    """The 20-byte payload of a well-formed lower-case bech32 address with this prefix; None otherwise."""
    head, separator, tail = address.rpartition("1")
    if head != prefix or not separator or any(char not in CHARSET for char in tail):
        return None
    words = [CHARSET.index(char) for char in tail]
    # 20 bytes = 160 bits = 32 five-bit words, plus 6 checksum words.
    if len(words) != 38 or _polymod(_expand(prefix) + words) != 1:
        return None
    value = 0
    for word in words[:32]:
        value = value << 5 | word
    return value.to_bytes(20, "big")


def is_valid(address: str, prefix: str = GONKA_PREFIX) -> bool:
    return decode(address, prefix) is not None


def _ripemd160(data: bytes) -> bytes:
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:  # OpenSSL 3 without its legacy provider; pycryptodome comes with web3
        from Crypto.Hash import RIPEMD160

        return bytes(RIPEMD160.new(data).digest())


def key_hash(compressed_public_key: bytes) -> bytes:
    """RIPEMD-160(SHA-256(33-byte compressed key)): an address's payload."""
    return _ripemd160(hashlib.sha256(compressed_public_key).digest())


def address_of(compressed_public_key: bytes, prefix: str = GONKA_PREFIX) -> str:
    """bech32(prefix, RIPEMD-160(SHA-256(33-byte compressed key))), as Cosmos chains derive it."""
    return encode(prefix, key_hash(compressed_public_key))
