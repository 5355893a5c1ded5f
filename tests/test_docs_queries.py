"""Every query in docs/warehouse.md runs on SQLite, PostgreSQL and MariaDB after a real sync: each fenced
```sql block (``sql`` for all backends, ``sql postgresql``/``mysql``/``sqlite`` per dialect, ``empty-ok``
where a healthy warehouse may have no rows) on the backends it names, returning rows (unless a table it
reads is one the sync leaves empty), and the per-dialect variants of one query returning the same columns;
each ```python block (the pandas example) runs; and the data dictionary names every table and no column
that does not exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from pipeline_support import ANCHOR, history_keys, increment_keys, run, serial_loads, sim_settings

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import stream_names
from ordersync_pipeline.warehouse.connect import create_warehouse_engine

DOC = Path(__file__).resolve().parents[1] / "docs" / "warehouse.md"
DIALECTS = ("postgresql", "mysql", "sqlite")
FLAGS = {"empty-ok"}
SHOP = "shop-1"


@dataclass(frozen=True)
class Block:
    line: int
    dialects: tuple[str, ...]
    empty_ok: bool
    statements: tuple[str, ...]
    group: int            # per-dialect variants of one query share a group


def sql_blocks(text: str) -> list[Block]:
    """The ```sql blocks in order; consecutive dialect-specific blocks form one group, which must cover
    every dialect exactly once before the next query starts."""
    blocks: list[Block] = []
    group, pending = 0, set()
    for match in re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, flags=re.S | re.M):
        words = match.group(1).split()
        if not words or words[0] != "sql":
            continue
        line = text.count("\n", 0, match.start()) + 1
        unknown = [w for w in words[1:] if w not in DIALECTS and w not in FLAGS]
        assert not unknown, f"docs/warehouse.md line {line}: unknown tag(s) {unknown} on a sql block"
        named = tuple(w for w in words[1:] if w in DIALECTS)
        assert not (pending & set(named)), f"line {line}: a dialect twice for one query"
        if not named:
            assert not pending, f"line {line}: the query before it lacks {sorted(set(DIALECTS) - pending)}"
        statements = tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", match.group(2)) if s.strip())
        blocks.append(Block(line, named or DIALECTS, "empty-ok" in words, statements, group))
        pending |= set(named)
        if not named or pending == set(DIALECTS):
            group, pending = group + 1, set()
    assert not pending, f"the last query lacks {sorted(set(DIALECTS) - pending)}"
    return blocks


def python_blocks(text: str) -> list[tuple[int, str]]:
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_the_block_rules_catch_a_query_missing_a_dialect() -> None:
    complete = ("```sql postgresql\nSELECT 1;\n```\n```sql mysql sqlite\nSELECT 1;\n```\n"
                "```sql\nSELECT 2;\n```\n")
    assert [b.group for b in sql_blocks(complete)] == [0, 0, 1]
    with pytest.raises(AssertionError, match="lacks"):
        sql_blocks("```sql postgresql\nSELECT 1;\n```\n```sql\nSELECT 2;\n```\n")
    with pytest.raises(AssertionError, match="unknown tag"):
        sql_blocks("```sql postgres\nSELECT 1;\n```\n")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=11, shops=1, orders_per_day=300, history_days=3,
                                           clock="stepped")) as s:
        yield s


def _sync(sim: Simulator, home: Path, url: str) -> None:
    """A small real sync of every stream: the history days and an hour of increment partitions, through
    Dagster."""
    settings = serial_loads(sim_settings(sim, home, url))
    streams = stream_names()  # every registered stream, so queries on any stream's tables find rows
    assert run(settings, "historical", shops=[SHOP], time_keys=history_keys(), streams=streams).success
    keys = increment_keys(ANCHOR + timedelta(hours=12), 4)
    assert run(settings, "increment", shops=[SHOP], time_keys=keys, streams=streams).success


def _reads_an_empty_table(url: str, statement: str) -> bool:
    """The statement reads a table or view the test's sync leaves empty (one that sync does not fill, such
    as another job's output): it runs and names its columns, but need not return rows."""
    for name in set(re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_]\w*)", statement, flags=re.I)):
        try:
            _, rows = _execute(url, f"SELECT count(*) FROM {name}")
        except sa.exc.DBAPIError:
            continue  # not a relation (a CTE's name, say)
        if rows[0][0] == 0:
            return True
    return False


def _execute(url: str, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.exec_driver_sql(statement)
            return [k.lower() for k in result.keys()], [tuple(r) for r in result]
    finally:
        engine.dispose()


def test_every_documented_query_runs_on_every_backend_after_a_sync(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        pg_url: str, mysql_url: str, sqlite_url: str) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    urls = {"postgresql": pg_url, "mysql": mysql_url, "sqlite": sqlite_url}
    for dialect, url in urls.items():
        _sync(sim, tmp_path / dialect, url)
    blocks = sql_blocks(DOC.read_text(encoding="utf-8"))
    assert len({b.group for b in blocks}) >= 10
    problems: list[str] = []
    columns: dict[tuple[int, int], dict[str, list[str]]] = {}
    for block in blocks:
        for dialect in block.dialects:
            for index, statement in enumerate(block.statements):
                try:
                    keys, rows = _execute(urls[dialect], statement)
                except sa.exc.DBAPIError as exc:
                    problems.append(f"line {block.line} on {dialect}: {str(exc.orig).splitlines()[0]}")
                    continue
                if not rows and not block.empty_ok and not _reads_an_empty_table(urls[dialect], statement):
                    problems.append(f"line {block.line} on {dialect}: no rows")
                columns.setdefault((block.group, index), {})[dialect] = keys
    assert not problems, "\n".join(problems)
    for (group, index), by_dialect in columns.items():
        assert set(by_dialect) == set(DIALECTS), (group, index)
        assert len({tuple(keys) for keys in by_dialect.values()}) == 1, \
            f"the dialect variants of one query return different columns: {by_dialect}"
    # The pandas example, on each backend: it runs and every frame it builds has rows.
    for dialect, url in urls.items():
        monkeypatch.setenv("ORDERSYNC_WAREHOUSE_URL", url)
        for line, code in python_blocks(DOC.read_text(encoding="utf-8")):
            namespace: dict[str, Any] = {}
            exec(compile(code, f"docs/warehouse.md:{line}", "exec"), namespace)  # noqa: S102 - our own docs
            frames = [v for v in namespace.values() if isinstance(v, pd.DataFrame)]
            assert frames and all(len(f) for f in frames), (dialect, line)
            if "paid" in namespace.get("daily", pd.DataFrame()).columns:
                paid = namespace["daily"]["paid"]
                assert all(type(v).__name__ == "Decimal" for v in paid), (dialect, paid.head())


def test_the_data_dictionary_has_every_table_and_no_column_that_does_not_exist() -> None:
    from ordersync_pipeline.warehouse.tables import metadata

    headed: set[str] = set()
    documented: dict[str, set[str]] = {}
    table = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            names = re.findall(r"`(\w+)`", line.split(" — ")[0])
            headed |= set(names)
            # Column rows are checked under a section about exactly one table of the schema.
            table = names[0] if len(names) == 1 and names[0] in metadata.tables else None
            if table:
                documented[table] = set()
        elif table and line.startswith("| `"):
            documented[table] |= set(re.findall(r"`(\w+)`", line.split("|")[1]))
    assert not set(metadata.tables) - headed, "tables without their section in docs/warehouse.md"
    for name, columns in documented.items():
        assert columns <= {c.name for c in metadata.tables[name].columns}, (name, columns)
    # Today's sections list every column of their table; keep it that way for these.
    for name in ("trades", "trade_orders", "api_calls", "sync_windows", "quarantine"):
        assert documented[name] == {c.name for c in metadata.tables[name].columns}, name
