"""Request parsing: any JSON gives a valid request object or an InvalidRequest; nothing else.

And every InvalidRequest renders as a JSON error object (the client reads the
body before the status, client-contract.md §2).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node.api import wire
from node.jobs.desk import DelegatedRequest, JobRequest
from node.jobs.errors import InvalidRequest
from tests.support.strategies import EXAMPLES, json_values, objects_with

SETTINGS = settings(max_examples=EXAMPLES, deadline=None)

UINT256 = 2**256 - 1
addresses = st.one_of(
    st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex()),
    st.sampled_from(["0x0", "0x" + "g" * 40, "", "0X" + "a" * 40]),
)
hashes = st.one_of(st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex()), st.text(max_size=10))
uints = st.one_of(st.integers(0, 2**32), st.integers(-(2**300), 2**300), st.sampled_from([UINT256, UINT256 + 1, -1]))

subscription = objects_with(
    {
        "owner": addresses,
        "active_at": uints,
        "period": uints,
        "frequency": uints,
        "redundancy": uints,
        "containers": hashes,
        "lazy": st.booleans(),
        "verifier": addresses,
        "payment_amount": uints,
        "payment_token": addresses,
        "wallet": addresses,
    }
)
signature = objects_with({"nonce": uints, "expiry": uints, "v": uints, "r": uints, "s": uints})
job_like = st.one_of(
    objects_with(
        {
            "containers": st.lists(st.text(max_size=10), max_size=3),
            "data": json_values(),
            "requires_proof": st.one_of(st.none(), st.booleans()),
        }
    ),
    objects_with({"subscription": subscription, "signature": signature, "data": json_values()}),
)
status_like = objects_with(
    {
        "id": st.text(max_size=300),
        "status": st.sampled_from(["success", "failed", "running", "done"]),
        "containers": st.lists(st.text(max_size=10), max_size=3),
        "data": json_values(),
    }
)


def _clean_error(error: InvalidRequest) -> None:
    body = wire.error_body(error)
    assert isinstance(body["error"], str) and body["error"]
    json.dumps(body)  # renderable as the JSON error answer


def _job(body: Any) -> None:
    try:
        parsed = wire.parse_job(body)
    except InvalidRequest as error:
        _clean_error(error)
        return
    if isinstance(parsed, JobRequest):
        assert isinstance(body, dict)
        assert parsed.containers == body["containers"] and all(isinstance(c, str) for c in parsed.containers)
        assert parsed.data == body["data"] or parsed.data != parsed.data  # NaN is not equal to itself
        assert parsed.requires_proof is bool(body.get("requires_proof"))
    else:
        assert isinstance(parsed, DelegatedRequest)
        for name in ("active_at", "period", "frequency", "redundancy", "payment_amount"):
            assert 0 <= parsed.subscription[name] <= UINT256
        assert 0 <= parsed.signature["r"] <= UINT256 and 0 <= parsed.signature["s"] <= UINT256


@SETTINGS
@given(json_values())
def test_any_json_is_a_job_or_invalid(body: Any) -> None:
    _job(body)


@SETTINGS
@given(job_like)
def test_job_shaped_json_is_a_job_or_invalid(body: dict[str, Any]) -> None:
    _job(body)


@SETTINGS
@given(st.one_of(json_values(), st.lists(job_like, max_size=4)))
def test_any_json_is_a_batch_or_invalid(body: Any) -> None:
    try:
        items = wire.parse_batch(body)
    except InvalidRequest as error:
        _clean_error(error)
        return
    assert isinstance(body, list) and len(items) == len(body)


@SETTINGS
@given(st.one_of(json_values(), status_like))
def test_any_json_is_a_status_or_invalid(body: Any) -> None:
    try:
        parsed = wire.parse_status(body)
    except InvalidRequest as error:
        _clean_error(error)
        return
    assert isinstance(parsed, wire.StatusBody) and 1 <= len(parsed.id) <= 256


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=300),
        json_values().map(lambda value: json.dumps(value).encode()),
        st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),
    )
)
def test_any_body_bytes_decode_or_are_invalid(raw: bytes) -> None:
    try:
        wire.decode_json(raw)
    except InvalidRequest as error:
        _clean_error(error)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {
            "owner": st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex()),
            "active_at": st.integers(0, 2**32 - 1),
            "period": st.integers(0, 2**32 - 1),
            "frequency": st.integers(0, 2**32 - 1),
            "redundancy": st.integers(0, 2**16 - 1),
            "containers": st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex()),
            "lazy": st.booleans(),
            "verifier": st.just("0x" + "0" * 40),
            "payment_amount": st.integers(0, UINT256),
            "payment_token": st.just("0x" + "0" * 40),
            "wallet": st.just("0x" + "1" * 40),
        }
    ),
    st.fixed_dictionaries(
        {
            "nonce": st.integers(0, 2**32 - 1),
            "expiry": st.integers(0, 2**32 - 1),
            "v": st.integers(0, 255),
            "r": st.integers(0, UINT256),
            "s": st.integers(0, UINT256),
        }
    ),
)
def test_valid_delegated_subscription_parses_exactly(sub: dict[str, Any], sig: dict[str, Any]) -> None:
    # Through the stdlib JSON text and back, as the handler does: big integers stay exact.
    raw = json.dumps({"subscription": sub, "signature": sig, "data": {"x": 1}}).encode()
    parsed = wire.parse_job(wire.decode_json(raw))
    assert isinstance(parsed, DelegatedRequest)
    assert parsed.subscription == sub and parsed.signature == sig
