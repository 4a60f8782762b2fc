"""What the SQLite migrations share: their change in one transaction with Alembic's version stamp."""

from __future__ import annotations

from alembic import op


def on_sqlite_in_one_transaction() -> bool:
    """True on SQLite, where it also opens the migration's transaction (False elsewhere).

    Python's sqlite3 runs DDL outside a transaction until the first data write: without the
    BEGIN, a migration failing half-way would leave its change half made and the stamp behind.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return False
    if not getattr(bind.connection.driver_connection, "in_transaction", True):
        bind.exec_driver_sql("BEGIN")
    return True
