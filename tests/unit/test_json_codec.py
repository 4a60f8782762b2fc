"""node/json_codec.py: orjson's speed, the stdlib's values, text shape and errors."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import json_codec
from tests.support.strategies import EXAMPLES, json_values

SETTINGS = settings(max_examples=EXAMPLES, deadline=None)
std = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
std_standard = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class Status(str, enum.Enum):
    DONE = "done"


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


class Ratio(float):
    pass


class Record(dict[str, Any]):
    pass


def has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_float(item) for item in value)
    return False


# -- encoding -------------------------------------------------------------------


ORDINARY = [
    {
        "source": 1,
        "destination": 1,
        "data": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        "requires_proof": False,
    },
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1764750000,
        "model": "tiny",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "日本語 é 😀 \u2028"}, "finish_reason": None}
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    },
    ["tiny", "echo"],
    {"quote": '"', "backslash": "\\", "slash": "/", "control": "\x00\x1f\x7f\n\t", "empty": "", "list": []},
    {"ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1], "bools": [True, False], "nothing": None, "floats": [0.5, -0.0]},
]


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_values_have_the_stdlib_text(value: Any) -> None:
    assert json_codec.dumps(value) == std(value)
    assert json_codec.dumps(value, allow_nan=False) == std(value)
    assert json_codec.dumps_bytes(value) == std(value).encode()


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        {"r": 45484533188921605635093505132650746807889623049579449762910591704467399622542, "v": 28},
        [2**256 - 1, {"payment_amount": 2**255}],
        {1: "int key", None: "null key", 2.5: "float key"},
        {True: "bool key"},
        {Status.DONE: 1},
        Status.DONE,
        [Level.HIGH],
        {"text": Text("sub"), "ratio": Ratio(0.25)},
        Record(a=1),
        collections.OrderedDict(b=2, a=1),
        (1, (2, 3)),
        {"deep": json.loads("[" * 300 + "]" * 300)},  # deeper than orjson goes
    ],
)
def test_what_orjson_refuses_is_encoded_by_the_stdlib(value: Any) -> None:
    assert json_codec.dumps(value) == std(value)
    assert json_codec.dumps_bytes(value) == std(value).encode()
    assert json_codec.dumps(value, allow_nan=False) == std_standard(value)


@pytest.mark.parametrize(
    "value", [float("nan"), [float("inf")], {"a": None, "b": [1, {"c": float("-inf")}]}, (None, float("nan"))]
)
def test_nan_and_infinity_are_written_as_the_stdlib_does_or_refused(value: Any) -> None:
    # orjson would write them as null: a value that reads back different.
    assert json_codec.dumps(value) == std(value)
    assert json_codec.dumps_bytes(value) == std(value).encode()
    assert "NaN" in json_codec.dumps(value) or "Infinity" in json_codec.dumps(value)
    with pytest.raises(ValueError, match="JSON compliant"):  # the text node/store/faults.py recognises
        json_codec.dumps(value, allow_nan=False)
    with pytest.raises(ValueError, match="JSON compliant"):
        json_codec.dumps_bytes(value, allow_nan=False)


def test_null_without_nan_is_orjson_text() -> None:
    value = {"a": None, "b": [0.5, None]}
    assert json_codec.dumps(value, allow_nan=False) == '{"a":null,"b":[0.5,null]}'


@pytest.mark.parametrize("value", [{"x": "\ud800"}, {"\udfff": 1}, ["ok", "a\udc00b"]])
def test_lone_surrogates_as_the_stdlib_does(value: Any) -> None:
    assert json_codec.dumps(value) == std(value)  # text with the surrogate in it, as before
    with pytest.raises(UnicodeEncodeError):  # as std(value).encode() raises
        json_codec.dumps_bytes(value)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [Point(1), datetime.date(2026, 1, 1), {1, 2}, b"raw", object()])
def test_what_the_stdlib_refuses_is_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="is not JSON serializable"):
        json_codec.dumps(value)
    with pytest.raises(TypeError, match="is not JSON serializable"):
        json_codec.dumps_bytes(value)


def test_a_circular_value_is_refused_as_by_the_stdlib() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        json_codec.dumps(loop)


@SETTINGS
@given(json_values())
def test_any_json_value_reads_back_as_the_stdlib_text_does(value: Any) -> None:
    text = json_codec.dumps(value)
    assert json_codec.dumps_bytes(value) == text.encode()
    # The same values (NaN included: the stdlib writes it back the same way) ...
    assert std(json.loads(text)) == std(value)
    # ... and the same text, but for how some floats are spelt (1e-7 for 1e-07).
    if not has_float(value):
        assert text == std(value)


# -- decoding -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "18446744073709551615",  # 2^64-1: orjson's own
        "18446744073709551616",  # 2^64: orjson would give a float
        "-9223372036854775809",
        '{"r": 45484533188921605635093505132650746807889623049579449762910591704467399622542}',
        "[1e400, -1e400]",  # inf: orjson refuses
        "[NaN, Infinity, -Infinity]",
        '"\\ud800"',
        '{"\\udfff": 1}',
        '"\\ud83d\\ude00"',
        '{"id": "1234567890123456789012345", "n": 1.5}',  # a long digit run in a string
        "\ufeff[1]",  # the stdlib refuses it as text, takes it as bytes
        '{"a": 1, "a": 2}',
        "[0.1, 1e-7, 2.2250738585072011e-308, 9007199254740993, -0.0, 1E2]",
        '"a\x7fb \u2028 日本"',
    ],
)
def test_loads_gives_the_stdlib_values(text: str) -> None:
    for raw in (text, text.encode("utf-8")):
        assert outcome(json_codec.loads, raw) == outcome(json.loads, raw)


def outcome(loads: Any, raw: str | bytes) -> tuple[str, str]:
    """The value's type and stdlib text (it tells an int from a float and shows NaN), or the error."""
    try:
        value = loads(raw)
    except ValueError as error:
        return type(error).__name__, str(error)
    return type(value).__name__, std(value)


def test_loads_takes_utf16_as_the_stdlib_does() -> None:
    raw = '{"a": [1, "é"]}'.encode("utf-16")
    assert json_codec.loads(raw) == {"a": [1, "é"]}


@pytest.mark.parametrize("raw", ["", "[1,]", "{'a': 1}", "1 2", '"a\x01"', "[", b"\xff", "0x10"])
def test_loads_refuses_as_the_stdlib_does(raw: str | bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(raw)
    with pytest.raises(ValueError) as refused:
        json_codec.loads(raw)
    assert type(refused.value) is type(expected.value) and str(refused.value) == str(expected.value)


@SETTINGS
@given(json_values())
def test_loads_reads_any_stdlib_text(value: Any) -> None:
    text = std(value)
    assert std(json_codec.loads(text)) == std(json.loads(text)) == text
    assert std(json_codec.loads(text.encode())) == text


# Text near JSON: the decoders must agree on what they take, and on its value.
near_json = st.text(alphabet='[]{}",:0123456789.eE+- \t\n\\tuflsrnaNIiy\u00e9\x00\ud800', max_size=40)


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(st.one_of(near_json, near_json.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=20)))
def test_fast_loads_takes_only_what_the_stdlib_takes_alike(raw: str | bytes) -> None:
    done, value = json_codec.fast_loads(raw)
    if done:
        assert (type(value).__name__, std(value)) == outcome(json.loads, raw)
    assert outcome(json_codec.loads, raw) == outcome(json.loads, raw)
