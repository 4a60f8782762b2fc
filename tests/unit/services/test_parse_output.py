"""gateway.parse_output: a service's answer decoded to the stdlib's values, standard JSON only."""

from __future__ import annotations

import json

import pytest

from node.services.gateway import NotStandardJson, parse_output


@pytest.mark.parametrize(
    "body",
    [
        b'{"r": 45484533188921605635093505132650746807889623049579449762910591704467399622542, "v": 28}',
        b"[18446744073709551615, 18446744073709551616, -9223372036854775809, 1.0, 1e19]",
        b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "\xe6\x97\xa5 \\ud83d\\ude00"}}], "x": null}',
        b'\xef\xbb\xbf{"bom": 1}',
        b"[1e999]",  # inf, as before: the store refuses it by name
    ],
)
def test_the_stdlib_values(body: bytes) -> None:
    expected = json.loads(body)
    output = parse_output(body)
    assert repr(output) == repr(expected)  # repr tells 1 from 1.0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"[NaN]", "NaN"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'"\\ud800"', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
    ],
)
def test_nan_infinity_and_lone_surrogates_are_refused(body: bytes, named: str) -> None:
    with pytest.raises(NotStandardJson, match=named):
        parse_output(body)


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff", b"[1,]"])
def test_what_is_not_json_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_output(body)
