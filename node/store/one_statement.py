"""A group commit in one statement on PostgreSQL: each kind of write a data-modifying CTE over arrays.

Run write by write, a batch costs a round trip per statement (and BEGIN, the shared bound's
query, COMMIT: five for new jobs and finished ones together), and the server runs the whole
executor once per row. Here each statement of the batch reads all its rows from one array per
parameter (`unnest`), the bound is one more CTE, and the batch is one statement: one round
trip, one implicit transaction. bench/README.md ("Where PostgreSQL's time goes") has the
figures.

The forms are derived from the statements as SQLAlchemy compiles them for asyncpg (every
parameter rendered `$n::TYPE`); a statement of another shape has no form, and its batches run
write by write (server_writer.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

# A parameter as SQLAlchemy renders it for asyncpg: its position and its type.
_PARAM = re.compile(r"\$(\d+)::([A-Z][A-Z0-9_]*(?:\(\d+\))?)")
_ANY_PARAM = re.compile(r"\$\d+")
SOURCE = "{source}"  # where a form reads its rows: unnest(...) AS r(p1, ..., ord)


class ArrayForm(NamedTuple):
    """A statement rewritten to write every row of arrays r.p1..r.pN at once."""

    body: str  # the statement, reading row values from r.p<n>; SOURCE marks its FROM item
    types: tuple[str, ...]  # the type of parameter n (each passed as an array)
    insert: bool  # an INSERT: it may take a room (`, room WHERE r.ord <= room.n` follows SOURCE)


def array_form(sql: str) -> ArrayForm | None:
    """The form of `INSERT … VALUES (…) [ON CONFLICT …]` or `UPDATE … SET … WHERE …`; None for other shapes."""
    params = {int(match.group(1)): match.group(2) for match in _PARAM.finditer(sql)}
    if (
        not params
        or len(_ANY_PARAM.findall(sql)) != len(_PARAM.findall(sql))
        or set(params) != set(range(1, len(params) + 1))
    ):
        return None  # a parameter without its type, or positions with gaps: not a shape known here
    types = tuple(params[n] for n in range(1, len(params) + 1))
    rows = _PARAM.sub(lambda match: f"r.p{match.group(1)}", sql)
    if rows.startswith("INSERT INTO ") and rows.count(" VALUES (") == 1:
        start = rows.index(" VALUES (") + len(" VALUES (")
        end = _closing(rows, start)
        if end is None:
            return None
        values, rest = rows[start:end], rows[end + 1 :]
        # WHERE even when nothing bounds the rows: `FROM x ON CONFLICT` would read as a join's ON.
        body = f"{rows[: start - len(' VALUES (')]} SELECT {values} FROM {SOURCE}{rest}"
        return ArrayForm(body, types, insert=True)
    if rows.startswith("UPDATE ") and rows.count(" WHERE ") == 1 and " FROM " not in rows:
        head, where = rows.split(" WHERE ")
        return ArrayForm(f"{head} FROM {SOURCE} WHERE {where}", types, insert=False)
    return None


def _closing(text: str, start: int) -> int | None:
    """The index of the parenthesis closing the one opened just before `start`."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def compose(forms: Sequence[ArrayForm], room: tuple[str, int] | None, bounded: Sequence[bool]) -> str:
    """One statement writing each form's rows; it returns, per form, how many rows it wrote.

    Its parameters: those of `room` (its SQL, numbered from $1, and how many it takes), when
    given, then the arrays of form 0, of form 1... The forms flagged in `bounded` (inserts) write
    only the first rows, as many as `room` returns."""
    ctes: list[str] = []
    offset = 0
    if room is not None:
        room_sql, taken = room
        # MATERIALIZED: read (and locked) once, before any row it bounds.
        ctes.append(f"room(n) AS MATERIALIZED ({room_sql})")
        offset = taken
    for index, form in enumerate(forms):
        arrays = ", ".join(f"${offset + n}::{kind}[]" for n, kind in enumerate(form.types, start=1))
        names = ", ".join(f"p{n}" for n in range(1, len(form.types) + 1))
        source = f"unnest({arrays}) WITH ORDINALITY AS r({names}, ord)"
        if form.insert:
            source += ", room WHERE r.ord <= room.n" if bounded[index] else " WHERE true"
        ctes.append(f"w{index} AS ({form.body.replace(SOURCE, source)} RETURNING 1)")
        offset += len(form.types)
    counts = ", ".join(f"(SELECT count(*) FROM w{index})" for index in range(len(forms)))
    return f"WITH {', '.join(ctes)} SELECT {counts}"
