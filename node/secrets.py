"""Configured secrets never leave the node in what a service answers.

A service may reflect what the node sent it (the `Authorization` header with its
container's bearer token), or print a secret it was handed in its env. Before the
node stores, relays or delivers a service's answer, every registered secret
(`node.logs.register_secrets`: wallet key, Docker password, bearer tokens, secret
env values) is replaced by `[REDACTED]`.

Only the exact values go: unlike the log redactor, nothing is guessed from context,
since an answer that says "password: ..." is the service's own business. A search
of the raw bytes for each secret decides whether the parsed answer needs a walk, so
a clean answer costs one fast substring scan per secret, and nothing when none is
configured.
"""

from __future__ import annotations

import json
import re
from typing import Any

from node.logs import REDACTED, Redactor, redact

_HEX = re.compile(r"(?i)^(0x)?[0-9a-f]+$")
_REDACTED_BYTES = REDACTED.encode()


def _text_forms(secret: str) -> set[str]:
    """How `secret` appears in plain text: as is, and a hex key in either case, with or without 0x."""
    if _HEX.match(secret):
        digits = secret[2:] if secret[:2].lower() == "0x" else secret
        return {secret, digits.lower(), digits.upper()}
    return {secret}


def _json_forms(secret: str) -> set[str]:
    """How `secret` can appear in a JSON answer: its text forms, JSON-escaped too."""
    forms = _text_forms(secret)
    forms |= {json.dumps(form)[1:-1] for form in forms} | {json.dumps(form, ensure_ascii=False)[1:-1] for form in forms}
    forms |= {form.replace("/", "\\/") for form in forms if "/" in form}  # encoders that escape "/"
    return forms


def _longest_first(forms: set[str]) -> tuple[bytes, ...]:
    # Longest first: a secret that contains another is replaced whole.
    return tuple(sorted((form.encode("utf-8", "surrogatepass") for form in forms), key=len, reverse=True))


class StreamScrubber:
    """Removes secrets from a byte stream, including one cut across two chunks.

    The end of a chunk that could begin a secret is held back until the next chunk
    (or the end) shows whether it does; everything else passes at once.
    """

    def __init__(self, needles: tuple[bytes, ...]) -> None:
        self._needles = needles
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._needles:
            return chunk
        buffer = self._held + chunk
        for needle in self._needles:  # longest first
            if needle in buffer:
                buffer = buffer.replace(needle, _REDACTED_BYTES)
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else b""
        return buffer[: len(buffer) - keep]

    def end(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _partial_suffix(self, buffer: bytes) -> int:
        """Length of the longest end of `buffer` that is a proper beginning of a secret."""
        longest = 0
        for needle in self._needles:
            for size in range(min(len(needle) - 1, len(buffer)), longest, -1):
                if buffer.endswith(needle[:size]):
                    longest = size
                    break
        return longest


class SecretScrubber:
    """The registered secrets, taken out of service answers (parsed values, error texts, streams)."""

    def __init__(self, redactor: Redactor = redact) -> None:
        self._redactor = redactor
        self._version = -1
        self._needles: tuple[bytes, ...] = ()
        self._stream_needles: tuple[bytes, ...] = ()

    def _refresh(self) -> tuple[bytes, ...]:
        if self._redactor.version != self._version:
            self._version = self._redactor.version
            secrets, _ = self._redactor.secrets()
            forms = _longest_first({form for secret in secrets for form in _json_forms(secret)})
            # To detect, a form that contains another adds nothing ("0xab.." holds "ab.."): fewer scans.
            self._needles = tuple(
                form for index, form in enumerate(forms) if not any(other in form for other in forms[index + 1 :])
            )
            self._stream_needles = _longest_first({form for secret in secrets for form in _text_forms(secret)})
        return self._needles

    def may_hold(self, raw: bytes) -> bool:
        """Whether an answer's raw bytes may hold a secret (then clean its parsed value with `value`)."""
        for needle in self._refresh():  # noqa: SIM110 - a plain loop: no generator per job call
            if needle in raw:
                return True
        return False

    def value(self, value: Any) -> Any:
        """A JSON value with every secret removed from its strings (keys included)."""
        exact = self._redactor.exact
        stack: list[Any] = []

        def clean(item: Any) -> Any:
            if isinstance(item, str):
                return exact(item)
            if isinstance(item, list):
                copy: list[Any] = list(item)
                stack.append(copy)
                return copy
            if isinstance(item, dict):
                mapping = {exact(key) if isinstance(key, str) else key: child for key, child in item.items()}
                stack.append(mapping)
                return mapping
            return item

        # Iterative, so a deeply nested answer cannot exhaust the recursion limit.
        root = clean(value)
        while stack:
            container = stack.pop()
            if isinstance(container, list):
                for index, child in enumerate(container):
                    container[index] = clean(child)
            else:
                for key, child in container.items():
                    container[key] = clean(child)
        return root

    def text(self, text: str) -> str:
        return self._redactor.exact(text)

    def stream(self) -> StreamScrubber:
        self._refresh()
        return StreamScrubber(self._stream_needles)
