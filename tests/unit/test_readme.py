"""The README tells the truth about the shipped config.json and the numbers in the code.

A newcomer runs `make run` with the shipped config.json and reads the README's config table for
what it does: every field the shipped file sets to something other than the default must be
marked "(... in the shipped `config.json`)" in that table, with the shipped value, and no row may
claim a difference that is not there.
"""

from __future__ import annotations

import re
from typing import Any

from node.api.jobs import STREAM_ID_GAP_SECONDS
from node.config import Config, load_config
from tests.support.processes import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SHIPPED_NOTE = re.compile(r"\(([^()]*) in the shipped `config\.json`\)")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def shipped_differences() -> dict[str, Any]:
    """Every field (containers aside) whose value in the shipped config.json is not the default."""
    shipped = _flat(load_config(ROOT / "config.json", environ={}).model_dump(mode="json", exclude={"containers"}))
    defaults = _flat(Config().model_dump(mode="json", exclude={"containers"}))
    return {field: value for field, value in shipped.items() if value != defaults[field]}


def config_table() -> dict[str, str]:
    """The README's config table: each field it names -> its whole row."""
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        full = ""
        for name in re.findall(r"`([^`]+)`", first_cell):
            # "`server.rate_limit.num_requests`, `.period`": a leading dot continues the last name.
            full = full.rsplit(".", 1)[0] + name if name.startswith(".") and full else name
            rows[full] = line
    return rows


def _row_for(field: str, table: dict[str, str]) -> str:
    if field in table:
        return table[field]
    for name, row in table.items():  # `chain.*` covers the chain section
        if name.endswith(".*") and field.startswith(name[:-1]):
            return row
    raise AssertionError(f"the README's config table has no row for {field}")


def _spellings(value: Any) -> set[str]:
    """How the table may write a value: 600, `stop`, `true`, 100 MiB, 60 s."""
    if isinstance(value, bool):
        return {f"`{str(value).lower()}`"}
    if isinstance(value, str):
        return {f"`{value}`"}
    spellings = {str(value), f"{value:g}"}
    if isinstance(value, int):
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value % size == 0:
                spellings.add(f"{value // size} {unit}")
    return spellings


def test_the_shipped_config_loads_and_differs_from_the_defaults() -> None:
    # Not vacuous: the file does set fields away from their defaults.
    assert {"manage_containers", "docker.on_shutdown"} <= set(shipped_differences())


def test_every_shipped_difference_is_marked_in_the_config_table() -> None:
    table = config_table()
    for field, value in shipped_differences().items():
        row = _row_for(field, table)
        notes = SHIPPED_NOTE.findall(row)
        assert notes, f"{field} is {value!r} in the shipped config.json, but its README row does not say so:\n{row}"
        assert any(spelling in note for note in notes for spelling in _spellings(value)), (
            f"{field}: the README's note {notes} does not give the shipped value {value!r}"
        )


def test_no_row_claims_a_difference_that_is_not_there() -> None:
    differing = set(shipped_differences())
    fields_by_row: dict[str, list[str]] = {}
    for field, row in config_table().items():
        fields_by_row.setdefault(row, []).append(field)
    for row, fields in fields_by_row.items():
        if SHIPPED_NOTE.search(row):
            assert differing & set(fields), f"the README marks {fields} as changed in the shipped config.json: not so"


def test_the_stream_framing_gap_is_the_one_in_the_code() -> None:
    gap = f"{STREAM_ID_GAP_SECONDS * 1000:g} ms"
    mentions = [line for line in README.splitlines() if "framing" in line]
    assert mentions, "the README no longer describes the stream framing"
    for line in mentions:
        assert gap in line, f"the code's gap is {gap}; the README says:\n{line}"
        assert not re.search(r"≥ ?\d+ ms", line), line
