"""The SQL job store (SQLAlchemy 2 async): tables, migrations, the repository."""
