"""The Gonka signature verifier: valid requests signed here with coincurve, and each way to be refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from coincurve import PrivateKey, PublicKey

from node.auth import signatures
from node.auth.bech32 import address_of, encode, is_valid
from node.auth.errors import Forbidden, Reason, Unauthenticated
from node.auth.signatures import (
    CURVE_ORDER,
    NS,
    SignatureSettings,
    SignatureVerifier,
    SignedRequest,
)

NOW_NS = 1_780_000_000 * NS
USER = PrivateKey(bytes.fromhex("11" * 32))
OTHER = PrivateKey(bytes.fromhex("22" * 32))
NODE = PrivateKey(bytes.fromhex("33" * 32))
NODE_ADDRESS = address_of(NODE.public_key.format())
USER_ADDRESS = address_of(USER.public_key.format())
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def rs(key: PrivateKey, message: bytes) -> bytes:
    """r‖s (low-S: libsecp256k1 signs that way) of SHA-256(message)."""
    return key.sign_recoverable(message)[:64]


def v2(body: bytes, timestamp: int, transfer: str) -> bytes:
    return hashlib.sha256(body).hexdigest().encode() + str(timestamp).encode() + transfer.encode()


def signed(
    key: PrivateKey = USER,
    body: bytes = BODY,
    timestamp: int = NOW_NS,
    transfer: str = NODE_ADDRESS,
    layout: str = "v2",
    requester: str | None = None,
    send_transfer: str | None = None,
) -> SignedRequest:
    if layout == "v2":
        message = v2(body, timestamp, transfer)
    elif layout == "v1":
        message = body + str(timestamp).encode() + transfer.encode()
    else:
        message = body
    return SignedRequest(
        authorization=base64.b64encode(rs(key, message)).decode(),
        requester=requester or address_of(key.public_key.format()),
        timestamp=str(timestamp),
        transfer_address=send_transfer,
        body=body,
    )


def verifier(**settings: object) -> SignatureVerifier:
    return SignatureVerifier(SignatureSettings(address=NODE_ADDRESS, **settings))  # type: ignore[arg-type]


def refused(request: SignedRequest, reason: Reason, now_ns: int = NOW_NS, **settings: object) -> str:
    with pytest.raises(Unauthenticated) as error:
        verifier(**settings).verify(request, now_ns)
    assert error.value.reason is reason, error.value.message
    return error.value.message


def test_bech32_matches_a_bip173_vector() -> None:
    # BIP-173's valid string "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw" carries the 5-bit words
    # 0..31 in order, which are these 20 bytes.
    words = int("".join(f"{word:05b}" for word in range(32)), 2).to_bytes(20, "big")
    assert encode("abcdef", words) == "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw"
    assert is_valid("abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw", prefix="abcdef")
    assert is_valid(USER_ADDRESS) and USER_ADDRESS.startswith("gonka1")
    assert not is_valid(USER_ADDRESS[:-1] + ("q" if USER_ADDRESS[-1] != "q" else "p"))
    assert not is_valid(USER_ADDRESS.upper())


def test_v2_and_v1_verify_and_name_the_requester() -> None:
    for layout in ("v2", "v1"):
        verified = verifier().verify(signed(layout=layout), NOW_NS)
        assert verified.address == USER_ADDRESS
        assert verified.layout == layout
        assert len(verified.signature) == 64
        assert verified.expires_at == pytest.approx(NOW_NS / NS + 60 + 1)


def test_an_explicit_transfer_address_equal_to_the_nodes_is_accepted() -> None:
    assert verifier().verify(signed(send_transfer=NODE_ADDRESS), NOW_NS).address == USER_ADDRESS


def test_a_tampered_body_is_refused() -> None:
    request = signed()
    tampered = SignedRequest(request.authorization, request.requester, request.timestamp, None, BODY + b" ")
    refused(tampered, Reason.BAD_SIGNATURE)


def test_the_high_s_twin_of_a_valid_signature_is_refused() -> None:
    request = signed()
    raw = base64.b64decode(request.authorization or "")
    s = int.from_bytes(raw[32:], "big")
    twin = raw[:32] + (CURVE_ORDER - s).to_bytes(32, "big")
    verifier().verify(request, NOW_NS)  # the original is fine
    high = SignedRequest(base64.b64encode(twin).decode(), request.requester, request.timestamp, None, BODY)
    refused(high, Reason.HIGH_S)


def test_stale_and_future_timestamps_are_refused_at_the_window_edges() -> None:
    # 60 s back is still fresh, a nanosecond more is not; the same 30 s ahead.
    verifier().verify(signed(timestamp=NOW_NS - 60 * NS), NOW_NS)
    refused(signed(timestamp=NOW_NS - 60 * NS - 1), Reason.STALE)
    verifier().verify(signed(timestamp=NOW_NS + 30 * NS), NOW_NS)
    refused(signed(timestamp=NOW_NS + 30 * NS + 1), Reason.FUTURE)
    # Configurable.
    refused(signed(timestamp=NOW_NS - 11 * NS), Reason.STALE, max_age_seconds=10.0)


def test_a_signature_for_another_transfer_address_is_refused() -> None:
    other = address_of(OTHER.public_key.format())
    message = refused(signed(transfer=other, send_transfer=other), Reason.WRONG_TRANSFER_ADDRESS)
    assert other in message
    # Signed for another node but sent without the header: the node checks against its own address.
    refused(signed(transfer=other), Reason.BAD_SIGNATURE)


def test_an_address_that_is_not_the_signers_is_refused() -> None:
    other = address_of(OTHER.public_key.format())
    refused(signed(requester=other), Reason.BAD_SIGNATURE)
    refused(signed(requester="gonka1notanaddress"), Reason.ADDRESS_MISMATCH)
    refused(signed(requester=encode("cosmos", bytes(20))), Reason.ADDRESS_MISMATCH)


def test_malformed_base64_and_wrong_lengths_are_refused() -> None:
    request = signed()
    for bad in ("not base64!", "QUJ", "Bearer abc", "ab\u00e9c"):
        refused(SignedRequest(bad, request.requester, request.timestamp, None, BODY), Reason.MALFORMED_BASE64)
    for size in (63, 65, 0 + 1):
        text = base64.b64encode(bytes(range(size))).decode()
        message = refused(
            SignedRequest(text, request.requester, request.timestamp, None, BODY), Reason.WRONG_SIGNATURE_LENGTH
        )
        assert str(size) in message
    # r = 0 is no signature at all.
    zero = base64.b64encode(bytes(32) + bytes(31) + b"\x01").decode()
    refused(SignedRequest(zero, request.requester, request.timestamp, None, BODY), Reason.BAD_SIGNATURE)


def test_missing_and_malformed_headers_are_refused() -> None:
    request = signed()
    refused(SignedRequest(None, request.requester, request.timestamp, None, BODY), Reason.MISSING_HEADER)
    refused(SignedRequest(request.authorization, None, request.timestamp, None, BODY), Reason.MISSING_HEADER)
    refused(SignedRequest(request.authorization, request.requester, None, None, BODY), Reason.MISSING_HEADER)
    refused(SignedRequest(request.authorization, request.requester, "12e9", None, BODY), Reason.MALFORMED_TIMESTAMP)
    refused(SignedRequest(request.authorization, request.requester, "-5", None, BODY), Reason.MALFORMED_TIMESTAMP)


def test_v0_is_refused_by_default_and_accepted_when_turned_on() -> None:
    request = signed(layout="v0")
    refused(request, Reason.BAD_SIGNATURE)
    no_timestamp = SignedRequest(request.authorization, request.requester, None, None, BODY)
    refused(no_timestamp, Reason.MISSING_HEADER)
    on = verifier(allow_v0=True)
    assert on.verify(request, NOW_NS).layout == "v0"
    assert on.verify(no_timestamp, NOW_NS).layout == "v0"


def test_the_allowlist_forbids_other_valid_signers() -> None:
    other = address_of(OTHER.public_key.format())
    strict = verifier(allowed=frozenset({other}))
    with pytest.raises(Forbidden) as error:
        strict.verify(signed(), NOW_NS)
    assert error.value.reason is Reason.NOT_ALLOWED
    assert strict.verify(signed(key=OTHER), NOW_NS).address == other


def test_once_an_address_is_known_its_cached_key_still_refuses_what_it_did_not_sign() -> None:
    # The second request from an address is checked with its cached public key (one verification
    # instead of recovery): the refusals must be the same as on the first request.
    known = verifier()
    assert known.verify(signed(), NOW_NS).address == USER_ADDRESS
    assert known.verify(signed(timestamp=NOW_NS + 1), NOW_NS).address == USER_ADDRESS
    assert known.verify(signed(timestamp=NOW_NS + 2, layout="v1"), NOW_NS).layout == "v1"
    forged = signed(key=OTHER, requester=USER_ADDRESS)
    tampered = signed()
    tampered = SignedRequest(tampered.authorization, tampered.requester, tampered.timestamp, None, BODY + b"x")
    for request in (forged, tampered):
        with pytest.raises(Unauthenticated) as error:
            known.verify(request, NOW_NS)
        assert error.value.reason is Reason.BAD_SIGNATURE


def counting_recoveries(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every public-key recovery the verifier asks for (the address payload it was for)."""
    recovered: list[bytes] = []
    recover = signatures._recovers_to

    def counted(signature: bytes, message: bytes, payload: bytes) -> PublicKey | None:
        recovered.append(payload)
        return recover(signature, message, payload)

    monkeypatch.setattr(signatures, "_recovers_to", counted)
    return recovered


def test_keys_the_allowlist_refuses_are_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    recovered = counting_recoveries(monkeypatch)
    strict = verifier(allowed=frozenset({USER_ADDRESS}))
    for offset in range(2):
        with pytest.raises(Forbidden):
            strict.verify(signed(key=OTHER, timestamp=NOW_NS + offset), NOW_NS)
        assert strict.verify(signed(timestamp=NOW_NS + offset), NOW_NS).address == USER_ADDRESS
    # OTHER recovered each time; USER once, then checked with its remembered key.
    assert len(recovered) == 3


def test_a_full_set_of_known_keys_forgets_the_longest_known_only(monkeypatch: pytest.MonkeyPatch) -> None:
    recovered = counting_recoveries(monkeypatch)
    monkeypatch.setattr(signatures, "KNOWN_KEYS", 2)
    third = PrivateKey(bytes.fromhex("44" * 32))
    known = verifier()
    for offset, key in enumerate((USER, OTHER, third, OTHER, USER)):
        known.verify(signed(key=key, timestamp=NOW_NS + offset), NOW_NS)
    # USER went when `third` came; OTHER stayed known; USER's return recovers it again.
    assert len(recovered) == 4
