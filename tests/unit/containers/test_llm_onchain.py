"""The llm service's on-chain input decoder (containers/llm/onchain.py), against eth_abi's encoder.

The module is plain standard library (it runs inside the image, which has no web3), so it is
loaded from its file here; the real container is exercised in tests/e2e/containers/test_llm_service.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from eth_abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st

ONCHAIN_PY = Path(__file__).resolve().parents[3] / "containers" / "llm" / "onchain.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llm_onchain", ONCHAIN_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


onchain = _load()


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


@given(st.text())
def test_decodes_whatever_abi_encode_string_produces(text: str) -> None:
    assert onchain.decode_abi_string(abi_encode(["string"], [text])) == text


@given(st.text(min_size=1).filter(str.strip), st.booleans())
def test_prompt_from_hex_takes_the_nodes_hex_with_or_without_0x(text: str, prefixed: bool) -> None:
    encoded = abi_encode(["string"], [text]).hex()
    assert onchain.prompt_from_hex(("0x" if prefixed else "") + encoded) == text


def test_a_later_offset_is_followed() -> None:
    # abi.encode(string) always puts the tail at 32, but the offset is what the ABI says to read.
    data = word(64) + word(0) + word(5) + b"hello".ljust(32, b"\0")
    assert onchain.decode_abi_string(data) == "hello"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the input is empty"),
        (b"\x00" * 31, "too short for the offset word"),
        (word(31) + word(0), "offset is 31"),
        (word(0) + word(0), "offset is 0"),
        (word(32), "too short for the length word at byte 32"),
        (word(32) + word(5) + b"hi".ljust(32, b"\0")[:2], "length is 5 bytes but only 2 follow"),
        (
            word(32) + word(2**256 - 1) + b"\0" * 32,
            "length is 115792089237316195423570985008687907853269984665640564039457584007913129639935",
        ),
        (word(32) + word(2) + b"hi", "not padded to a whole 32-byte word"),
        (word(32) + word(2) + b"hi" + b"\x01" + b"\0" * 29, "padding is not zero bytes"),
        (word(32) + word(2) + b"\xff\xfe".ljust(32, b"\0"), "not valid UTF-8 (byte 0)"),
    ],
)
def test_malformed_encodings_are_refused_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(onchain.AbiError, match=message.replace("(", r"\(").replace(")", r"\)")):
        onchain.decode_abi_string(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prompt": "hi"}, "must be a hex string of abi.encode\\(string prompt\\), got dict"),
        ("zz", "not valid hex"),
        ("0x123", "not valid hex"),
        (abi_encode(["string"], ["  \n"]).hex(), "the prompt is empty"),
        ("", "the input is empty"),
    ],
)
def test_bad_data_is_refused(data: object, message: str) -> None:
    with pytest.raises(onchain.AbiError, match=message):
        onchain.prompt_from_hex(data)


def test_delivery_has_the_five_fields_the_node_serializes() -> None:
    from node.chain.serialize import serialize_output

    answer = "Paris ✓"
    shaped = onchain.delivery("abcd", answer)
    assert set(shaped) == {"raw_input", "processed_input", "raw_output", "processed_output", "proof"}
    inputs, output, proof = serialize_output(shaped)
    assert output == abi_encode(["bytes", "bytes"], [answer.encode(), b""])
    assert inputs == abi_encode(["bytes", "bytes"], [b"\xab\xcd", b""])
    assert proof == b""
