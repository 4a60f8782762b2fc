"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import strategies as st

# More examples for a longer local run: PROPERTY_EXAMPLES=5000.
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "300"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    # Beyond int64 and beyond 2^256: the wire carries uint256 values.
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)


def json_values(keys: st.SearchStrategy[str] | None = None, max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Any JSON document (as Python values), optionally with object keys drawn from `keys`."""
    key_strategy = keys if keys is not None else st.text(max_size=12)
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(key_strategy, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


# Wrong-typed field values: small, so that generating them stays cheap.
small_json = json_values(max_leaves=4)


def objects_with(
    fields: dict[str, st.SearchStrategy[Any]], extra: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with any subset of `fields` (each from its strategy or any JSON), plus noise keys."""
    anything = extra if extra is not None else small_json

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, strategy in fields.items():
            choice = draw(st.integers(0, 5))
            if choice == 0:
                continue  # missing
            result[name] = draw(anything) if choice == 1 else draw(strategy)
        if draw(st.booleans()):
            result.update(draw(st.dictionaries(st.text(max_size=8), scalars, max_size=2)))
        return result

    return build()
