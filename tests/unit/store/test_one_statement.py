"""Which statements a batch may join into one (node/store/one_statement.py): the shapes it knows, and no other."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql

from node.store.jobs_sql import FINISH, INSERT, KEY, upsert
from node.store.one_statement import array_form, compose
from node.store.tables import jobs

DIALECT = postgresql.asyncpg.dialect()


def sql(statement: object) -> str:
    return str(statement.compile(dialect=DIALECT))  # type: ignore[attr-defined]


def test_an_insert_reads_its_rows_from_arrays() -> None:
    form = array_form(sql(INSERT))
    assert form is not None and form.insert
    assert len(form.types) == 15 and form.types[6] == "BOOLEAN" and form.types[9] == "FLOAT"
    assert " SELECT r.p1, r.p2," in form.body and "VALUES" not in form.body and "$" not in form.body


def test_an_update_joins_its_rows_by_key_and_a_repeated_parameter_stays_one_value() -> None:
    form = array_form(sql(FINISH))
    assert form is not None and not form.insert
    # updated_at and finished_at are both `now`: one parameter, one array.
    assert "updated_at=r.p4, finished_at=r.p4" in form.body
    assert form.body.endswith("WHERE jobs.client_ip = r.p8 AND jobs.id = r.p9")


@pytest.mark.parametrize(
    "statement",
    [
        delete(jobs).where(KEY),  # neither an insert nor an update
        select(jobs.c.id).where(KEY),
        update(jobs).values(status=bindparam("status")),  # no WHERE: not a write of keyed rows
    ],
)
def test_other_shapes_have_no_form(statement: object) -> None:
    assert array_form(sql(statement)) is None


def test_compose_numbers_the_room_first_then_each_form_s_arrays() -> None:
    insert, finish = array_form(sql(upsert(postgresql.insert))), array_form(sql(FINISH))
    assert insert is not None and finish is not None
    room = ("SELECT $1::INTEGER - used FROM job_slots WHERE scope = $2::VARCHAR FOR UPDATE", 2)
    composed = compose([insert, finish], room, [True, False])
    assert composed.startswith("WITH room(n) AS MATERIALIZED (SELECT $1::INTEGER")
    assert "unnest($3::VARCHAR[]" in composed and "$17::INTEGER[]) WITH ORDINALITY" in composed
    assert ", room WHERE r.ord <= room.n ON CONFLICT" in composed
    assert "unnest($18::VARCHAR[]" in composed and "$26::VARCHAR[])" in composed and "$27" not in composed
    assert composed.endswith("SELECT (SELECT count(*) FROM w0), (SELECT count(*) FROM w1)")
