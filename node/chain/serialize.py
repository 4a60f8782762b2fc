"""Turning the last container's output into deliverCompute's (input, output, proof) bytes.

Same encoding as the reference node (chain.md §5): an output object carrying all of
raw_input, processed_input, raw_output, processed_output and proof (hex strings or
null) is split into ABI-encoded byte pairs; anything else is delivered as
abi.encode(string) of its Python text form, which is what consumers of the
reference node decode today.
"""

from __future__ import annotations

from typing import Any

from eth_abi import encode as abi_encode

FIELDS = ("raw_input", "processed_input", "raw_output", "processed_output", "proof")


def _hex_bytes(value: Any, field: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a hex string or null")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{field} is not valid hex") from None


def serialize_output(output: Any) -> tuple[bytes, bytes, bytes]:
    """(input, output, proof) for deliverCompute. Raises ValueError on malformed hex fields."""
    if isinstance(output, dict) and all(field in output for field in FIELDS):
        raw_input, processed_input, raw_output, processed_output, proof = (
            _hex_bytes(output[field], field) for field in FIELDS
        )
        return (
            abi_encode(["bytes", "bytes"], [raw_input, processed_input]),
            abi_encode(["bytes", "bytes"], [raw_output, processed_output]),
            proof,
        )
    return b"", abi_encode(["string"], [str(output)]), b""
