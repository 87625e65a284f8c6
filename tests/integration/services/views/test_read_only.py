"""The read models never write: no module under services/views imports or calls the units of
work that write (`transaction`, `retrying`, `pipelined` from db.engine)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from config import PROJECT_ROOT

WRITERS = {"transaction", "retrying", "pipelined"}
VIEWS = sorted((PROJECT_ROOT / "services" / "views").glob("*.py"))


def _writes(path: Path) -> list[str]:
    """Every import of a writer from db.engine, and every use of one by name or attribute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "db.engine":
            found += [f"imports {a.name}" for a in node.names if a.name in WRITERS]
        elif isinstance(node, ast.Name) and node.id in WRITERS:
            found.append(f"uses {node.id} (line {node.lineno})")
        elif isinstance(node, ast.Attribute) and node.attr in WRITERS:
            found.append(f"uses .{node.attr} (line {node.lineno})")
    return found


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_views_never_open_a_unit_of_work_that_writes(path: Path) -> None:
    assert _writes(path) == []


def test_the_check_sees_a_writer() -> None:
    assert VIEWS, "no view module found"
    assert "imports transaction" in _writes(PROJECT_ROOT / "services" / "ops" / "quarantine.py")
