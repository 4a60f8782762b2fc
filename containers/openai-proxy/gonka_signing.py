"""Gonka request signing (the requester's side), standalone: the container imports nothing from the node.

A Gonka transfer-agent node takes OpenAI requests signed with the requester's secp256k1 key:

    message   = v2: hex_lower(sha256(body)) ‖ decimal(timestamp_ns) ‖ transfer_address   (ASCII)
                v1: body ‖ decimal(timestamp_ns) ‖ transfer_address
    signature = ECDSA secp256k1 over sha256(message), deterministic (RFC 6979), low-S, as r‖s
    headers   = Authorization: base64(r‖s), X-Requester-Address: bech32("gonka", ripemd160(sha256(pubkey33))),
                X-Timestamp: timestamp_ns, X-Transfer-Address: transfer_address

The curve work is the `ecdsa` library's (pure Python, RFC 6979); only the low-S fold (s -> n - s)
and the bech32 encoding (BIP-173) are written here.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence

from ecdsa import SECP256k1, SigningKey
from ecdsa.util import sigencode_strings_canonize

LAYOUTS = ("v2", "v1")
ADDRESS_PREFIX = "gonka"
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class SigningError(ValueError):
    """The key or the transfer address is unusable. The message never holds the key."""


def _polymod(values: Sequence[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            checksum ^= _GENERATOR[i] if (top >> i) & 1 else 0
    return checksum


def _to_5bit(data: bytes) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((acc >> bits) & 31)
    if bits:
        out.append((acc << (5 - bits)) & 31)
    return out


def bech32_encode(prefix: str, data: bytes) -> str:
    """BIP-173 bech32 (not bech32m), as Cosmos addresses use."""
    words = _to_5bit(data)
    expanded = [ord(c) >> 5 for c in prefix] + [0] + [ord(c) & 31 for c in prefix]
    polymod = _polymod([*expanded, *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return prefix + "1" + "".join(_CHARSET[w] for w in words + checksum)


def address_of(compressed_public_key: bytes) -> str:
    """The bech32 `gonka` address of a 33-byte compressed public key."""
    try:
        ripemd = hashlib.new("ripemd160")
    except ValueError:  # an OpenSSL without the legacy digests
        raise SigningError("this Python's hashlib has no ripemd160, which Gonka addresses need") from None
    ripemd.update(hashlib.sha256(compressed_public_key).digest())
    return bech32_encode(ADDRESS_PREFIX, ripemd.digest())


def signing_message(body: bytes, timestamp_ns: int, transfer_address: str, layout: str = "v2") -> bytes:
    suffix = str(timestamp_ns).encode() + transfer_address.encode()
    if layout == "v2":
        return hashlib.sha256(body).hexdigest().encode() + suffix
    if layout == "v1":
        return body + suffix
    raise SigningError(f"unknown signature layout {layout!r} (use one of: {', '.join(LAYOUTS)})")


class GonkaSigner:
    """Signs request bodies for one transfer address with one private key."""

    def __init__(
        self, private_key_hex: str, transfer_address: str, layout: str = "v2", clock: Callable[[], int] = time.time_ns
    ) -> None:
        text = private_key_hex.strip()
        text = text[2:] if text.lower().startswith("0x") else text
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise SigningError("GONKA_PRIVATE_KEY is not hex") from None
        if len(raw) != 32:
            raise SigningError(f"GONKA_PRIVATE_KEY must be 32 bytes (64 hex digits), got {len(raw)} bytes")
        scalar = int.from_bytes(raw, "big")
        if not 0 < scalar < SECP256k1.order:
            raise SigningError("GONKA_PRIVATE_KEY is not a valid secp256k1 private key (out of range)")
        if not transfer_address.strip():
            raise SigningError("GONKA_TRANSFER_ADDRESS is empty: give the upstream node's gonka address")
        if layout not in LAYOUTS:
            raise SigningError(f"GONKA_SIGNATURE_LAYOUT must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self._key = SigningKey.from_string(raw, curve=SECP256k1)
        self.address = address_of(self._key.get_verifying_key().to_string("compressed"))
        self.transfer_address = transfer_address.strip()
        self.layout = layout
        self._clock = clock

    def __repr__(self) -> str:  # never the key
        return f"GonkaSigner(address={self.address!r}, transfer_address={self.transfer_address!r})"

    def sign(self, body: bytes, timestamp_ns: int) -> bytes:
        """The 64-byte r‖s signature of `body` at `timestamp_ns` (deterministic, low-S)."""
        message = signing_message(body, timestamp_ns, self.transfer_address, self.layout)
        # sigencode_strings_canonize folds s into the low half (s > n/2 -> n - s).
        r, s = self._key.sign_deterministic(message, hashfunc=hashlib.sha256, sigencode=sigencode_strings_canonize)
        return bytes(r) + bytes(s)

    def headers(self, body: bytes) -> dict[str, str]:
        """The four Gonka headers for sending exactly `body` now."""
        timestamp = self._clock()
        return {
            "Authorization": base64.b64encode(self.sign(body, timestamp)).decode("ascii"),
            "X-Requester-Address": self.address,
            "X-Timestamp": str(timestamp),
            "X-Transfer-Address": self.transfer_address,
        }
