"""Query plans of what a service really runs: every statement it sends through the engine is
explained as it is about to run (`EXPLAIN (FORMAT JSON)`; with `analyze`, executed in a savepoint
that is rolled back, with the rows each scan really read), so a test can assert which tables a
service reads by which index, and how much of a table's history it reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import event

from db.engine import get_engine

SEQ_SCAN = "Seq Scan"


@dataclass(frozen=True)
class Scan:
    """One scan node of a plan: how a relation is read, and under which alias."""

    node: str  # "Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", ...
    relation: str
    alias: str
    index: str | None
    rows_read: float | None  # with `analyze`: the rows the scan returned, over all its loops


@dataclass(frozen=True)
class Explained:
    sql: str
    plan: dict[str, Any]

    def scans(self) -> list[Scan]:
        found: list[Scan] = []

        def walk(node: dict[str, Any], index: str | None = None) -> None:
            if node["Node Type"] == "Bitmap Heap Scan":
                # The index a bitmap heap scan reads is named by its Bitmap Index Scan child.
                index = next(
                    (c.get("Index Name") for c in node.get("Plans", []) if "Index Name" in c),
                    None,
                )
            if "Relation Name" in node and node["Node Type"].endswith("Scan"):
                found.append(
                    Scan(
                        node["Node Type"],
                        node["Relation Name"],
                        node.get("Alias", node["Relation Name"]),
                        node.get("Index Name") or index,
                        node["Actual Rows"] * node["Actual Loops"]
                        if "Actual Rows" in node
                        else None,
                    )
                )
            for child in node.get("Plans", []):
                walk(child)

        walk(self.plan["Plan"])
        return found

    def seq_scans(self, tables: set[str]) -> list[Scan]:
        """Sequential scans of `tables` (a partition counts as its table)."""
        return [s for s in self.scans() if s.node == SEQ_SCAN and _table(s.relation) in tables]


def _table(relation: str) -> str:
    # follower_history's monthly partitions are follower_history_YYYY_MM.
    return re.sub(r"_\d{4}_\d{2}$", "", relation)


@contextmanager
def explained(containing: str, *, analyze: bool = False) -> Iterator[list[Explained]]:
    """While the block runs, every statement the services send whose text contains `containing`
    is explained just before it runs, on its connection, in a savepoint (or transaction) rolled
    back at once: the plan sees exactly the rows the statement will, and with `analyze` executes
    without effect before the statement runs for real."""
    found: list[Explained] = []
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"

    def before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if many or containing not in statement:
            return
        raw: psycopg.Connection[Any] = cursor.connection
        with raw.transaction(force_rollback=True):
            row = raw.execute(f"EXPLAIN ({options}) {statement}", params).fetchone()
        assert row is not None
        found.append(Explained(statement, row[0][0]))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert found, f"no statement containing {containing!r} was run"
