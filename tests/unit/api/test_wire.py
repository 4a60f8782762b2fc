import pytest

from node.api.wire import decode_json, parse_batch, parse_job, parse_status
from node.jobs.desk import DelegatedRequest, JobRequest
from node.jobs.errors import InvalidRequest
from tests.support.vectors import delegated_body

# Captured from the real client (client-contract.md §5.3).
DELEGATED = delegated_body()


def test_job_request_shapes() -> None:
    assert parse_job({"containers": ["a"], "data": {"x": 1}, "requires_proof": False}) == JobRequest(
        ["a"], {"x": 1}, False
    )
    # requires_proof missing or null means false; data may be any JSON.
    assert parse_job({"containers": ["a"], "data": [1, 2]}) == JobRequest(["a"], [1, 2], False)
    assert parse_job({"containers": ["a"], "data": "s", "requires_proof": None}).requires_proof is False
    # A client-supplied top-level id is not ours to take.
    assert parse_job({"containers": ["a"], "data": 1, "id": "mine"}) == JobRequest(["a"], 1, False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": {}}, "containers"),
        ({"containers": ["a"]}, "data"),
        ({"containers": "a", "data": 1}, "containers"),
        ({"containers": [1], "data": 1}, "containers.0"),
        ({"containers": ["a"], "data": 1, "requires_proof": "yes"}, "requires_proof"),
    ],
)
def test_bad_job_requests_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_job(body)
    assert caught.value.params == {"field": field}
    assert f"field '{field}'" in caught.value.message


def test_delegated_subscription_keeps_256_bit_integers_exact() -> None:
    raw = decode_json(__import__("json").dumps(DELEGATED).encode())
    parsed = parse_job(raw)
    assert isinstance(parsed, DelegatedRequest)
    assert parsed.signature["r"] == DELEGATED["signature"]["r"]
    assert parsed.subscription["containers"] == DELEGATED["subscription"]["containers"]


def test_delegated_subscription_range_checks() -> None:
    too_big = {**DELEGATED, "signature": {**DELEGATED["signature"], "expiry": 2**32}}
    with pytest.raises(InvalidRequest, match=r"signature\.expiry"):
        parse_job(too_big)
    bad_owner = {**DELEGATED, "subscription": {**DELEGATED["subscription"], "owner": "0x12"}}
    with pytest.raises(InvalidRequest, match=r"subscription\.owner"):
        parse_job(bad_owner)


def test_batch() -> None:
    with pytest.raises(InvalidRequest, match="Expected a list"):
        parse_batch({"containers": []})
    with pytest.raises(InvalidRequest, match="Item 1: Invalid job request"):
        parse_batch([{"containers": ["a"], "data": 1}, {"containers": ["a"]}])
    assert len(parse_batch([{"containers": ["a"], "data": 1}, DELEGATED])) == 2


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"\xff\xfe", b"[1,]", b"nul"])
def test_malformed_bodies(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_json(raw)


def test_deeply_nested_json_is_a_clean_error() -> None:
    # 100k levels would overflow the C stack inside json.loads (a crash, not an exception).
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        decode_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        decode_json(b'{"a":' * 300 + b"1" + b"}" * 300)
    # Brackets inside strings don't count, and moderate nesting is fine.
    assert decode_json(b'["' + b"[" * 1000 + b'"]') == ["[" * 1000]
    assert decode_json(b"[" * 200 + b"]" * 200) is not None


def test_status_body() -> None:
    assert parse_status({"id": "x", "status": "running", "containers": ["a"], "data": {}}).id == "x"
    with pytest.raises(InvalidRequest, match="field 'containers'"):
        parse_status({"id": "x", "status": "running"})
