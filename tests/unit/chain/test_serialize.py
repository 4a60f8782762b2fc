import pytest
from eth_abi import decode

from node.chain.serialize import serialize_output


def test_plain_output_is_the_abi_encoded_python_text() -> None:
    inputs, output, proof = serialize_output({"output": "hi", "ok": True})
    assert inputs == b"" and proof == b""
    # The reference node uses str(dict): Python repr, not JSON.
    assert decode(["string"], output) == ("{'output': 'hi', 'ok': True}",)
    assert decode(["string"], serialize_output("abcd")[1]) == ("abcd",)


def test_structured_output_is_split_into_byte_pairs() -> None:
    inputs, output, proof = serialize_output(
        {"raw_input": "0x0102", "processed_input": None, "raw_output": "ff", "processed_output": "", "proof": "0xaa"}
    )
    assert decode(["bytes", "bytes"], inputs) == (b"\x01\x02", b"")
    assert decode(["bytes", "bytes"], output) == (b"\xff", b"")
    assert proof == b"\xaa"


def test_malformed_hex_is_refused() -> None:
    with pytest.raises(ValueError, match="raw_output"):
        serialize_output(
            {"raw_input": "", "processed_input": "", "raw_output": "zz", "processed_output": "", "proof": None}
        )
    with pytest.raises(ValueError, match="proof"):
        serialize_output({"raw_input": "", "processed_input": "", "raw_output": "", "processed_output": "", "proof": 5})
