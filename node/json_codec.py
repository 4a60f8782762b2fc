"""JSON on the hot path: orjson where it gives exactly the stdlib's values, the stdlib otherwise.

The output has the node's one shape: compact separators, non-ASCII written as is
(`json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)`); only the spelling of
some floats differs (orjson writes `1e-7` where the stdlib writes `1e-07`: the same value).
orjson is several times faster on the small dicts of a job, but it does not take
everything the stdlib does, and where it differs silently it is kept off:

- integers beyond 64 bits (on-chain uint256): orjson refuses to encode them and
  decodes them as floats, so bodies with a long digit run are decoded by the stdlib;
- NaN and Infinity: orjson writes them as `null`; an output with a `null` in it is
  checked for them and then encoded by the stdlib (which writes `NaN`, or raises
  ValueError "... not JSON compliant" with `allow_nan=False`, as the store needs);
- lone UTF-16 surrogates, non-str dict keys, subclasses of str/int/float/dict/list,
  dataclasses, dates, nesting deeper than 255, circular references: orjson refuses,
  the stdlib encodes them (or raises) as before;
- decoding: whatever orjson refuses (NaN, 1e400, a lone surrogate escape, a BOM,
  UTF-16, malformed JSON) goes to `json.loads`, which accepts or refuses it as before.

Left as orjson has it: a plain (non-str, non-int) Enum member and a UUID are encoded
(as their value and their text) where the stdlib raises TypeError; no caller passes them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# Subclasses, dataclasses and dates go to the stdlib, which encodes (or refuses) them as before.
_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_std_dumps_standard = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# Every integer outside orjson's [-2^63, 2^64) has 19 digits or more: such text goes to the stdlib.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))  # each digit as "0"
_LONG_RUN = b"0" * 19


def _has_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is anywhere in `value` (orjson wrote it as null)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def dumps_bytes(obj: Any, allow_nan: bool = True) -> bytes:
    """`obj` as UTF-8 JSON, as `json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()`.

    `allow_nan=False` refuses NaN and Infinity with the stdlib's ValueError. A lone surrogate
    raises UnicodeEncodeError, as encoding the stdlib's text would.
    """
    try:
        out = orjson.dumps(obj, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return (_std_dumps if allow_nan else _std_dumps_standard)(obj).encode("utf-8")
    if b"null" in out and _has_non_finite(obj):
        return (_std_dumps if allow_nan else _std_dumps_standard)(obj).encode("utf-8")
    return out


def dumps(obj: Any, allow_nan: bool = True) -> str:
    """`obj` as JSON text, as `json.dumps(obj, separators=(",", ":"), ensure_ascii=False)`.

    Unlike dumps_bytes, a lone surrogate is written into the text (as the stdlib does).
    """
    try:
        out = orjson.dumps(obj, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return (_std_dumps if allow_nan else _std_dumps_standard)(obj)
    if b"null" in out and _has_non_finite(obj):
        return (_std_dumps if allow_nan else _std_dumps_standard)(obj)
    return out.decode("utf-8")


def fast_loads(raw: bytes | str) -> tuple[bool, Any]:
    """(True, the value) when orjson decodes `raw` to what `json.loads` gives; else (False, None).

    For callers with their own stdlib decoding (and its error messages) to fall back to.
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: orjson refuses it
            return False, None
    # Digits as "0", all else blanked, then one substring search: a few times faster than a regex.
    if _LONG_RUN in raw.translate(_DIGITS_ONLY):
        return False, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None


def loads(raw: bytes | str) -> Any:
    """As `json.loads(raw)`: the same values, the same errors."""
    done, value = fast_loads(raw)
    return value if done else json.loads(raw)
