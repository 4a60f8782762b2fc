"""node/chain depends on its own port, never on the store that implements it (no package cycle)."""

from __future__ import annotations

import ast

from tests.support.processes import ROOT


def imported_modules(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_nothing_in_node_chain_imports_the_store() -> None:
    offenders = {}
    for path in (ROOT / "node" / "chain").glob("*.py"):
        name = str(path.relative_to(ROOT))
        offenders[name] = sorted(m for m in imported_modules(name) if m.startswith("node.store"))
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_the_lease_domain_is_free_of_sql_and_framework() -> None:
    for path in ("node/leases.py", "node/cluster.py", "node/chain/leader.py", "node/chain/ports.py"):
        modules = imported_modules(path)
        framework = {m for m in modules if m.split(".")[0] in {"sqlalchemy", "aiohttp"} or m.startswith("node.store")}
        assert not framework, path
