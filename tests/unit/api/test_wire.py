import pytest

from node.api.wire import decode_json, error_body, parse_batch, parse_job, parse_status
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
    assert parse_job({"containers": ["a"], "data": "s", "requires_proof": None}) == JobRequest(["a"], "s", False)
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


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"data": NaN}', "NaN is not standard JSON"),
        (b'{"data": [Infinity]}', "Infinity is not standard JSON"),
        (b'{"data": -Infinity}', "-Infinity is not standard JSON"),
        (b'{"data": 1e999}', "too large for a double"),
        (b'{"data": -' + b"9" * 400 + b".5}", "too large for a double"),
        (b'{"data": ' + b"7" * 5000 + b"}", "an integer has more than 4300 digits"),
        (b'{"data": "\\ud800"}', "the string at 'data' holds a lone UTF-16 surrogate"),
        (b'{"data": {"k": ["ok", "\\uDFFF x"]}}', "the string at 'data.k.1' holds a lone UTF-16 surrogate"),
        (b'{"\\udc00": 1}', "the string at '\\udc00' holds a lone UTF-16 surrogate"),
        (b'{"data": "\xed\xa0\x80"}', "the string at 'data' holds a lone UTF-16 surrogate"),
    ],
)
def test_only_standard_storable_json_is_accepted(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_json(raw)
    assert message in caught.value.message
    # The error itself must be writable as UTF-8 JSON.
    __import__("json").dumps(error_body(caught.value), ensure_ascii=False).encode("utf-8")


def test_numbers_and_text_that_are_fine_stay_exact() -> None:
    big = int("8" * 4300)
    assert decode_json(b'{"n": ' + str(big).encode() + b"}") == {"n": big}
    assert decode_json(b"[1e308, 2.5e-300, 1E5, -0.0]") == [1e308, 2.5e-300, 1e5, -0.0]
    # A surrogate pair is one character, not a lone surrogate.
    assert decode_json(b'["\\ud83d\\ude00", "\xf0\x9f\x98\x80"]') == ["\U0001f600", "\U0001f600"]
    # A batch checks its items itself: the body as a whole is let through.
    assert decode_json(b'[{"data": "\\ud800"}]', check_text=False) == [{"data": "\ud800"}]


def test_integers_at_and_beyond_64_bits_stay_exact_integers() -> None:
    # orjson (the fast path) would decode those beyond 64 bits as floats.
    values = [2**63 - 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, 2**256 - 1, 1.0, 1e19, 123456789012345678]
    decoded = decode_json(__import__("json").dumps({"data": values}).encode())["data"]
    assert [(type(value), value) for value in decoded] == [(type(value), value) for value in values]


def test_a_batch_answers_unstorable_text_per_item() -> None:
    good = {"containers": ["a"], "data": 1}
    items = parse_batch([good, {"containers": ["a"], "data": {"t": "\ud800"}}, good])
    assert items[0] == items[2] == JobRequest(["a"], 1, False)
    assert isinstance(items[1], InvalidRequest) and "'data.t'" in items[1].message
