"""Verifying requests signed the way Gonka's transfer agents expect (inference-apis.md §3).

Headers: `Authorization` (base64 of the 64-byte r‖s), `X-Requester-Address`,
`X-Timestamp` (ns), optional `X-Transfer-Address`. The signed message is, newest first:

- v2: hex(sha256(body)) ‖ decimal(timestamp) ‖ transfer address  (gonka-openai 0.2.x)
- v1: body ‖ decimal(timestamp) ‖ transfer address
- v0: body  (no timestamp: replayable once it leaves the replay window; off unless enabled)

ECDSA over secp256k1 with SHA-256, low-S only. No key registry: the public key is
recovered from (r, s) and the message (two candidates), and the request is accepted
when a candidate's bech32 address is `X-Requester-Address`. The curve work is
libsecp256k1's (coincurve). This module checks one request; the replay check
(each signature once) needs the store and lives in the service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from functools import lru_cache

from coincurve import PublicKey

# coincurve's binding of libsecp256k1 (pinned in pyproject.toml): PublicKey.verify takes only
# DER, and the compact -> DER -> parsed round trip in Python was a third of a verification.
from coincurve._libsecp256k1 import ffi, lib

from node.auth.bech32 import decode, key_hash
from node.auth.errors import Forbidden, Reason, Unauthenticated

# The order of the secp256k1 group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = CURVE_ORDER // 2
SIGNATURE_BYTES = 64
NS = 1_000_000_000


@dataclass(frozen=True)
class SignatureSettings:
    address: str  # this node's own (transfer) address
    allowed: frozenset[str] = frozenset()  # empty: any address with a valid signature
    max_age_seconds: float = 60.0
    max_ahead_seconds: float = 30.0
    allow_v0: bool = False


@dataclass(frozen=True)
class SignedRequest:
    """What a signed request carries: its headers as sent (None when absent) and its exact body bytes."""

    authorization: str | None
    requester: str | None
    timestamp: str | None
    transfer_address: str | None
    body: bytes


@dataclass(frozen=True)
class VerifiedSignature:
    address: str
    signature: bytes  # r‖s: unique per accepted request (high-S twins are refused)
    layout: str
    # Node-clock time (s) after which the timestamp is stale, so a replay fails anyway
    # and the store may forget the signature.
    expires_at: float


def _refuse(reason: Reason, message: str) -> Unauthenticated:
    return Unauthenticated(reason, message)


def _decode(authorization: str) -> bytes:
    text = authorization.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(Reason.MALFORMED_BASE64, "Authorization is not valid base64 (expected base64 of r‖s)") from None
    if len(raw) != SIGNATURE_BYTES:
        raise _refuse(
            Reason.WRONG_SIGNATURE_LENGTH,
            f"the signature in Authorization has {len(raw)} bytes; expected {SIGNATURE_BYTES} (r‖s)",
        )
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    if not (0 < r < CURVE_ORDER and 0 < s < CURVE_ORDER):
        raise _refuse(Reason.BAD_SIGNATURE, "the signature's r or s is out of range")
    if s > HALF_ORDER:
        raise _refuse(Reason.HIGH_S, "the signature has a high S value (only low-S signatures are accepted)")
    return raw


# A caller sends the same address again and again: decode (bech32, in Python) once.
_payload = lru_cache(maxsize=4096)(decode)


def _recovers_to(signature: bytes, message: bytes, payload: bytes) -> PublicKey | None:
    """The one of the two public keys that (r, s) recovers to over sha256(message) whose hash is
    this address payload (compared as bytes: no bech32 encoding per request), or None."""
    for recovery_id in (b"\x00", b"\x01"):
        try:
            key = PublicKey.from_signature_and_message(signature + recovery_id, message)  # SHA-256 by default
        except Exception:  # no curve point for this r and recovery id
            continue
        if key_hash(key.format(compressed=True)) == payload:
            return key
    return None


def _verifies(key: PublicKey, signature: bytes, message: bytes) -> bool:
    """libsecp256k1's ECDSA verification of the 64-byte r‖s over sha256(message), by `key`
    (low-S only, as libsecp256k1 verifies)."""
    parsed = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_signature_parse_compact(key.context.ctx, parsed, signature):
        return False
    digest = hashlib.sha256(message).digest()
    return bool(lib.secp256k1_ecdsa_verify(key.context.ctx, parsed, digest, key.public_key))


# Public keys of addresses seen before: one ECDSA verification instead of up to two recoveries.
# An address is the hash of one key, so a key cached for it is the only key that can sign for it.
KNOWN_KEYS = 10_000


class SignatureVerifier:
    def __init__(self, settings: SignatureSettings) -> None:
        self._settings = settings
        self._max_age_ns = int(settings.max_age_seconds * NS)
        self._max_ahead_ns = int(settings.max_ahead_seconds * NS)
        self._keys: dict[bytes, PublicKey] = {}

    def _signed_by(self, signature: bytes, message: bytes, payload: bytes) -> bool:
        known = self._keys.get(payload)
        if known is not None:
            return _verifies(known, signature, message)
        key = _recovers_to(signature, message, payload)
        if key is None:
            return False
        if len(self._keys) >= KNOWN_KEYS:
            self._keys.clear()  # crude, and rare: a new key costs one recovery more
        self._keys[payload] = key
        return True

    @property
    def settings(self) -> SignatureSettings:
        return self._settings

    def verify(self, request: SignedRequest, now_ns: int) -> VerifiedSignature:
        """The requester's verified address, or Unauthenticated/Forbidden naming the reason."""
        settings = self._settings
        if not request.authorization:
            raise _refuse(Reason.MISSING_HEADER, "Authorization is missing")
        if not request.requester:
            raise _refuse(Reason.MISSING_HEADER, "X-Requester-Address is missing")
        signature = _decode(request.authorization)
        requester = request.requester.strip()
        payload = _payload(requester) if len(requester) < 100 else None
        if payload is None:
            raise _refuse(Reason.ADDRESS_MISMATCH, "X-Requester-Address is not a gonka bech32 address")
        transfer = request.transfer_address.strip() if request.transfer_address else settings.address
        if transfer != settings.address:
            raise _refuse(
                Reason.WRONG_TRANSFER_ADDRESS,
                f"the request is signed for transfer address {transfer}; this node is {settings.address}",
            )
        messages: list[tuple[str, bytes]] = []
        if request.timestamp is not None:
            text = request.timestamp.strip()
            if not text.isascii() or not text.isdigit():
                raise _refuse(Reason.MALFORMED_TIMESTAMP, "X-Timestamp must be a decimal number of nanoseconds")
            timestamp = int(text)
            if now_ns - timestamp > self._max_age_ns:
                raise _refuse(Reason.STALE, f"X-Timestamp is more than {settings.max_age_seconds:g} s old (stale)")
            if timestamp - now_ns > self._max_ahead_ns:
                raise _refuse(
                    Reason.FUTURE, f"X-Timestamp is more than {settings.max_ahead_seconds:g} s ahead of the node clock"
                )
            tail = text.encode() + transfer.encode()
            messages.append(("v2", hashlib.sha256(request.body).hexdigest().encode() + tail))
            messages.append(("v1", request.body + tail))
            expires_ns = timestamp + self._max_age_ns
        elif not settings.allow_v0:
            raise _refuse(Reason.MISSING_HEADER, "X-Timestamp is missing")
        else:
            expires_ns = now_ns + self._max_age_ns
        if settings.allow_v0:
            messages.append(("v0", request.body))
        layout = next((name for name, message in messages if self._signed_by(signature, message, payload)), None)
        if layout is None:
            # Recovery always yields some key: a changed body, another signer, another timestamp
            # or transfer address all look alike from here.
            raise _refuse(
                Reason.BAD_SIGNATURE,
                "the signature does not verify: it was not made by X-Requester-Address's key over this body, "
                "X-Timestamp and transfer address",
            )
        if settings.allowed and requester not in settings.allowed:
            raise Forbidden(Reason.NOT_ALLOWED, f"{requester} is not on this node's list of allowed addresses")
        # +1 s: the store forgets a signature only after its timestamp is surely stale.
        return VerifiedSignature(requester, signature, layout, expires_ns / NS + 1.0)
