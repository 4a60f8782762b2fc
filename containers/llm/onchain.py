"""On-chain jobs for the llm service: the prompt comes from a consumer contract, the answer goes back
in the shape the node turns into deliverCompute's bytes.

A consumer's `getContainerInputs` returns `abi.encode(string prompt)`; the node passes those bytes
as hex in `data` (source 0). The answer for destination 0 carries the five fields the node
serializes as `output = abi.encode(bytes raw_output, bytes processed_output)`
(shared/docs/chain.md §5), with raw_output the hex of the answer's UTF-8 text.

Only the standard ABI encoding of one string is accepted (no raw-text fallback): an input that is
not one is refused with a message naming what is wrong, so a consumer bug shows up as a failed job
rather than as the model answering a garbled prompt. Pure standard library: no web3 in the image.
"""

from __future__ import annotations

from typing import Any

WORD = 32  # ABI words are 32 bytes


class AbiError(ValueError):
    """The on-chain input is not `abi.encode(string)`; the message says why."""


def _word(data: bytes, at: int, what: str) -> int:
    if at + WORD > len(data):
        raise AbiError(f"the input is {len(data)} bytes: too short for the {what} word at byte {at}")
    return int.from_bytes(data[at : at + WORD], "big")


def decode_abi_string(data: bytes) -> str:
    """Decode `abi.encode(string s)`: a head word holding the offset of the tail, then at that
    offset a length word and the UTF-8 bytes (zero-padded to a whole word)."""
    if not data:
        raise AbiError("the input is empty: expected abi.encode(string prompt)")
    offset = _word(data, 0, "offset")
    if offset < WORD or offset % WORD:
        raise AbiError(f"the string's offset is {offset}: expected a multiple of 32 of at least 32 (usually 32)")
    length = _word(data, offset, "length")
    end = offset + WORD + length
    if end > len(data):
        raise AbiError(
            f"the string's length is {length} bytes but only {max(len(data) - offset - WORD, 0)} follow its length word"
        )
    padded_end = end + (-length % WORD)
    if padded_end > len(data):
        raise AbiError(f"the string of {length} bytes is not padded to a whole 32-byte word")
    if any(data[end:padded_end]):
        raise AbiError("the string's padding is not zero bytes")
    try:
        return data[offset + WORD : end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AbiError(f"the string is not valid UTF-8 (byte {exc.start})") from None


def strip_0x(text: str) -> str:
    return text[2:] if text[:2] in ("0x", "0X") else text


def prompt_from_hex(data: Any) -> str:
    """The prompt in a source-0 job's `data`: hex (0x optional) of `abi.encode(string prompt)`."""
    if not isinstance(data, str):
        raise AbiError(f"on-chain data must be a hex string of abi.encode(string prompt), got {type(data).__name__}")
    try:
        raw = bytes.fromhex(strip_0x(data))
    except ValueError:
        raise AbiError("on-chain data is not valid hex") from None
    prompt = decode_abi_string(raw)
    if not prompt.strip():
        raise AbiError("the prompt is empty")
    return prompt


def delivery(raw_input_hex: str, answer: str) -> dict[str, Any]:
    """The five fields the node serializes for deliverCompute; the answer's text is raw_output."""
    return {
        "raw_input": raw_input_hex,
        "processed_input": "",
        "raw_output": answer.encode("utf-8").hex(),
        "processed_output": "",
        "proof": None,
    }
