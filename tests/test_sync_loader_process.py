"""Loader processes: what they import (each module is memory in every loader) and that partitions loaded
in them land as in-process loads do."""

from __future__ import annotations

import functools
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from ordersync_pipeline.sync import runner as runner_module
from ordersync_pipeline.sync.details import DetailCandidates, detail_candidates
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import PartitionTask, RunnerSettings, SyncRunner
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.top.pages import TRADES, Page, parse_list_body
from ordersync_pipeline.warehouse.connect import open_warehouse

SAMPLES = Path(__file__).parent / "data" / "top-samples"
START = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
KEYS = ("2026-11-26-10:00", "2026-11-26-10:15")

# Modules a loader never uses: migrations (alembic, mako, pygments), the API client (requests, urllib3),
# the configuration models (pydantic, yaml), the orchestrator, frames, Arrow's compute functions. Together
# ~35 MB in each loader.
OFF_THE_LOAD_PATH = ("alembic", "mako", "requests", "urllib3", "pydantic", "yaml", "ordersync_pipeline.config",
                     "ordersync_pipeline.top.client", "dagster", "pandas", "pyarrow.compute")


def _window(key: str) -> Window:
    start = START.replace(minute=15 * KEYS.index(key))
    return Window(start, start.replace(minute=start.minute + 15))


def _lake(root: Path) -> PageLake:
    body = (SAMPLES / "trades_sold_increment_get_has_next.json").read_bytes()
    method = "taobao.trades.sold.increment.get"
    items, total, has_next = parse_list_body(body, TRADES, method=method)
    lake = PageLake(root)
    for key in KEYS:
        window = _window(key)
        page = Page(shop_id="shop-1", method=method, window_start=window.start, window_end=window.end,
                    page_no=1, page_size=100, request_id=f"r-{key}", fetched_at=window.end, body=body,
                    items=items, total_results=total, has_next=has_next)
        lake.write_partition(shop_id="shop-1", stream="trades.increment", partition_key=key, pages=iter([page]))
    return lake


def test_a_loader_process_imports_only_what_loading_needs(tmp_path: Path, pg_url: str) -> None:
    """A loader process spawned as ``ordersync sync`` spawns it loads a partition, and none of the
    modules off the load path is imported on the way. The parent is a script importing the CLI as the
    console script does: a spawned process imports the parent's main module again."""
    open_warehouse(pg_url).dispose()  # migrated here: loaders never migrate
    lake = _lake(tmp_path)
    script = tmp_path / "ordersync_like.py"
    check = f"sorted(m for m in {OFF_THE_LOAD_PATH!r} if m in __import__('sys').modules)"
    script.write_text("\n".join([
        "from ordersync_pipeline.cli import main  # the console script's one import",
        "",
        "if __name__ == '__main__':",
        "    import multiprocessing",
        "    from concurrent.futures import ProcessPoolExecutor",
        "    from ordersync_pipeline.sync import runner",
        "    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:",
        f"        figures = pool.submit(runner._load_in_worker, 'trades', 'increment', 'shop-1', {KEYS[0]!r},",
        f"                              {lake.url!r}, {pg_url!r}, None, False).result()",
        "        assert figures.records > 0, figures",
        "        # eval runs in the loader process, where the load above ran",
        f"        loaded = pool.submit(eval, {check!r}).result()",
        "    assert not loaded, f'imported by a loader process: {loaded}'",
    ]) + "\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_partitions_loaded_in_loader_processes_land_in_the_warehouse(tmp_path: Path, pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "PARALLEL_LOAD_MIN_RECORDS", 0)  # processes however small the run
    warehouse = open_warehouse(pg_url)
    lake = _lake(tmp_path)
    tasks = [PartitionTask(stream=stream("trades"), kind="increment", shop_id="shop-1", partition_key=key,
                           window=_window(key)) for key in KEYS]
    reasons = frozenset({"incomplete", "presale", "buyer_message"})
    runner = SyncRunner(lake=lake, warehouse=warehouse, run_id="run-1", settings=RunnerSettings(load_workers=2),
                        watches={"trades": functools.partial(DetailCandidates, reasons)})
    outcomes = list(runner.run(tasks, from_lake=True))
    assert [o.error for o in outcomes] == [None, None]
    for outcome in outcomes:  # the watch went to the loader process and its result came back
        pages = lake.read_partition(shop_id="shop-1", stream="trades.increment",
                                    partition_key=outcome.task.partition_key, shape=TRADES)
        assert outcome.watched == detail_candidates(pages, reasons)
    assert all(o.records > 0 and o.rows["trades"] > 0 for o in outcomes)
    with warehouse.engine.connect() as conn:
        trades = conn.execute(sa.text("select count(*) from trades")).scalar_one()
        windows = conn.execute(sa.text("select partition_key from sync_windows order by 1")).scalars().all()
    assert trades == outcomes[0].rows["trades"] and list(windows) == list(KEYS)
    warehouse.dispose()
