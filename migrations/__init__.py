"""Alembic migrations for the job store; the node applies them at start."""
