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

import binascii
import hashlib
from dataclasses import dataclass
from functools import lru_cache

from coincurve import PublicKey

# coincurve's binding of libsecp256k1 (pinned in pyproject.toml): PublicKey.verify takes only
# DER, and the compact -> DER -> parsed round trip in Python was a third of a verification.
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from node.auth.bech32 import decode, key_hash
from node.auth.errors import Forbidden, Reason, Unauthenticated

_CONTEXT = GLOBAL_CONTEXT.ctx  # the context coincurve's keys are made in by default

# The order of the secp256k1 group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = CURVE_ORDER // 2
SIGNATURE_BYTES = 64
NS = 1_000_000_000
_ORDER_BYTES = CURVE_ORDER.to_bytes(32, "big")
_HALF_ORDER_BYTES = HALF_ORDER.to_bytes(32, "big")
_ZERO = bytes(32)


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
    # strict_mode: what base64.b64decode(validate=True) accepts, without its regular expression.
    try:
        raw = binascii.a2b_base64(authorization.strip(), strict_mode=True)
    except (binascii.Error, ValueError):
        raise _refuse(Reason.MALFORMED_BASE64, "Authorization is not valid base64 (expected base64 of r‖s)") from None
    if len(raw) != SIGNATURE_BYTES:
        raise _refuse(
            Reason.WRONG_SIGNATURE_LENGTH,
            f"the signature in Authorization has {len(raw)} bytes; expected {SIGNATURE_BYTES} (r‖s)",
        )
    # Big-endian numbers of one length compare as their bytes do: no int conversion.
    r, s = raw[:32], raw[32:]
    if r == _ZERO or s == _ZERO or r >= _ORDER_BYTES or s >= _ORDER_BYTES:
        raise _refuse(Reason.BAD_SIGNATURE, "the signature's r or s is out of range")
    if s > _HALF_ORDER_BYTES:
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


def _verifies(public_key: object, signature: bytes, message: bytes, parsed: object) -> bool:
    """libsecp256k1's ECDSA verification of the 64-byte r‖s over sha256(message), by a parsed
    public key (low-S only, as libsecp256k1 verifies). `parsed`: room for the parsed signature."""
    if not lib.secp256k1_ecdsa_signature_parse_compact(_CONTEXT, parsed, signature):
        return False
    return bool(lib.secp256k1_ecdsa_verify(_CONTEXT, parsed, hashlib.sha256(message).digest(), public_key))


# Public keys of addresses seen before: one ECDSA verification instead of up to two recoveries.
# An address is the hash of one key, so a key cached for it is the only key that can sign for it.
KNOWN_KEYS = 10_000


class SignatureVerifier:
    def __init__(self, settings: SignatureSettings) -> None:
        self._settings = settings
        self._max_age_ns = int(settings.max_age_seconds * NS)
        self._max_ahead_ns = int(settings.max_ahead_seconds * NS)
        # address payload -> libsecp256k1's parsed public key (a cdata that owns its memory)
        self._keys: dict[bytes, object] = {}
        # Reused by every check: verify runs on the event loop's thread only.
        self._parsed = ffi.new("secp256k1_ecdsa_signature *")

    def _signed_by(self, signature: bytes, message: bytes, payload: bytes, remember: bool) -> bool:
        known = self._keys.get(payload)
        if known is not None:
            return _verifies(known, signature, message, self._parsed)
        key = _recovers_to(signature, message, payload)
        if key is None:
            return False
        if remember:
            if len(self._keys) >= KNOWN_KEYS:
                # The longest known goes: one recovery more if it signs again.
                del self._keys[next(iter(self._keys))]
            self._keys[payload] = key.public_key
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
        body = request.body
        layout: str | None = None
        # A key the allowlist refuses anyway is not kept: it would only push out the keys of those it lets in.
        remember = not settings.allowed or requester in settings.allowed
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
            # Newest layout first; an older one's message is only made when the newer did not verify.
            if self._signed_by(signature, hashlib.sha256(body).hexdigest().encode() + tail, payload, remember):
                layout = "v2"
            elif self._signed_by(signature, body + tail, payload, remember):
                layout = "v1"
            expires_ns = timestamp + self._max_age_ns
        elif not settings.allow_v0:
            raise _refuse(Reason.MISSING_HEADER, "X-Timestamp is missing")
        else:
            expires_ns = now_ns + self._max_age_ns
        if layout is None and settings.allow_v0 and self._signed_by(signature, body, payload, remember):
            layout = "v0"
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
