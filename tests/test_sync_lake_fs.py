"""The page lake on pyarrow file systems (a file:// URL, an in-memory SubTreeFileSystem standing in for an
object store: data first, manifest last, no half-written partition readable, the previous version's file
removed after publish, orphans swept), and partitions sharing one data file (write_shared: each reads back
exactly its own records and the detail answers completing them); a directory listing answering as
has_partition does, opening only the manifests it lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs as pafs
import pytest

import ordersync_pipeline.sync.lake as lake_module
from ordersync_pipeline.sync.lake import PageLake, PartitionMissing
from ordersync_pipeline.sync.lake_select import Selection
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.top.pages import TRADES, Page, parse_list_body

INCREMENT = "taobao.trades.sold.increment.get"
FULLINFO = "taobao.trade.fullinfo.get"
DAY = datetime(2026, 11, 26, tzinfo=SHANGHAI)
FETCHED = datetime(2026, 11, 26, 4, 0, tzinfo=timezone.utc)


def _at(minutes: int) -> datetime:
    return DAY + timedelta(minutes=minutes)


def _top(minutes: int) -> str:
    return _at(minutes).strftime("%Y-%m-%d %H:%M:%S")


def list_page(trades: Sequence[dict[str, Any]], page_no: int = 1, *, start: int = 0, end: int = 60) -> Page:
    body = orjson.dumps({"trades_sold_increment_get_response": {
        "total_results": len(trades), "trades": {"trade": list(trades)}, "request_id": f"r{page_no}"}})
    items, total, has_next = parse_list_body(body, TRADES, method=INCREMENT)
    return Page(shop_id="shop-1", method=INCREMENT, window_start=_at(start), window_end=_at(end),
                page_no=page_no, page_size=100, request_id=f"r{page_no}", fetched_at=FETCHED, body=body,
                items=items, total_results=total, has_next=has_next)


def detail_page(trade: dict[str, Any]) -> Page:
    body = orjson.dumps({"trade_fullinfo_get_response": {"trade": trade, "request_id": "d"}})
    items, _, _ = parse_list_body(body, TRADES, method=FULLINFO)
    return Page(shop_id="shop-1", method=FULLINFO, window_start=_at(0), window_end=_at(60), page_no=0,
                page_size=1, request_id="d", fetched_at=FETCHED, body=body, items=items, total_results=None,
                has_next=None)


def memory_lake() -> tuple[PageLake, pafs.FileSystem]:
    store = pafs._MockFileSystem()
    return PageLake("lake", filesystem=pafs.SubTreeFileSystem("bucket", store)), store


def read(lake: PageLake, key: str) -> list[Page]:
    return list(lake.read_partition(shop_id="shop-1", stream="trades.increment", partition_key=key, shape=TRADES))


def write(lake: PageLake, key: str, pages: Iterator[Page] | list[Page]) -> Any:
    return lake.write_partition(shop_id="shop-1", stream="trades.increment", partition_key=key, pages=pages)


def files(fs: pafs.FileSystem) -> list[str]:
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector("", recursive=True))
                  if i.type == pafs.FileType.File)


def test_a_file_url_lake_is_the_local_folder_lake(tmp_path: Path) -> None:
    lake = PageLake(f"file://{tmp_path}")
    assert lake.is_local and lake.root == tmp_path
    page = list_page([{"tid": 1, "modified": _top(5)}])
    manifest = write(lake, "k1", [page])
    assert manifest.path == tmp_path / "pages/stream=trades.increment/shop_id=shop-1/partition=k1.parquet"
    assert read(lake, "k1") == [page]
    assert (manifest.path.stat().st_mode & 0o777) == 0o600


def test_object_store_publishes_data_then_manifest_and_replaces_old_versions() -> None:
    lake, store = memory_lake()
    assert not lake.is_local
    first = list_page([{"tid": 1, "modified": _top(5)}])
    write(lake, "k1", [first])
    assert read(lake, "k1") == [first]
    assert lake.has_partition(shop_id="shop-1", stream="trades.increment", partition_key="k1")
    second = list_page([{"tid": 1, "modified": _top(6)}, {"tid": 2, "modified": _top(7)}])
    write(lake, "k1", [second])
    assert read(lake, "k1") == [second]
    data = [f for f in files(store) if f.endswith(".parquet")]
    assert len(data) == 1, data  # the first version's file is gone once the second is published

    def failing() -> Iterator[Page]:
        yield first
        raise RuntimeError("connection reset mid-window")

    with pytest.raises(RuntimeError):
        write(lake, "k1", failing())
    assert read(lake, "k1") == [second]  # the published version stays; the failed write left no file
    assert [f for f in files(store) if f.endswith(".parquet")] == data
    with pytest.raises(PartitionMissing):
        read(lake, "never")


def test_object_store_sweep_removes_only_unnamed_stale_data(monkeypatch: pytest.MonkeyPatch) -> None:
    lake, store = memory_lake()
    write(lake, "k1", [list_page([{"tid": 1, "modified": _top(5)}])])
    orphan = "bucket/lake/pages/stream=trades.increment/shop_id=shop-1/partition=k2.dead0000.parquet"
    with store.open_output_stream(orphan) as handle:
        handle.write(b"half a file from a writer that died")
    assert lake.sweep_temps() == []  # young: could be a live writer's
    monkeypatch.setattr(lake_module, "STALE_TEMP_AGE", timedelta(seconds=-1))
    removed = lake.sweep_temps()
    assert [p.name for p in removed] == ["partition=k2.dead0000.parquet"]
    assert len(read(lake, "k1")) == 1


def test_repr_never_shows_credentials() -> None:
    lake = PageLake("mock://user:secret@host/lake")
    assert "secret" not in repr(lake) and "host/lake" in repr(lake)


def _selections(keys: Sequence[tuple[str, int, int]]) -> list[Selection]:
    return [Selection(partition_key=key, start=_at(s), end=_at(e), time_field="modified", record_key="tid")
            for key, s, e in keys]


@pytest.mark.parametrize("make", [lambda tmp: PageLake(tmp), lambda tmp: memory_lake()[0]],
                         ids=["local", "object-store"])
def test_shared_pages_read_back_as_each_partitions_own_records(tmp_path: Path, make: Any) -> None:
    lake: PageLake = make(tmp_path)
    # One coalesced window [-5, 30] fetched newest first; partitions [-5, 15] and [10, 30] (overlap 5).
    trades = [{"tid": t, "modified": _top(m)} for t, m in [(1, 29), (2, 15), (3, 12), (4, 10), (5, 3), (6, -5)]]
    pages = [list_page(trades[:3], 2, start=-5, end=30), detail_page({"tid": 3, "modified": _top(12)}),
             list_page(trades[3:], 1, start=-5, end=30), detail_page({"tid": 5, "modified": _top(40)})]
    manifests = lake.write_shared(shop_id="shop-1", stream="trades.increment", pages=iter(pages),
                                  selections=_selections([("a", -5, 15), ("b", 10, 30)]))
    a, b = read(lake, "a"), read(lake, "b")
    # a: 2 (15, inclusive end), 3 (+ its detail), 4, 5 (+ its detail, whatever its new modified), 6
    assert [[r["tid"] for r in p.items] for p in a] == [[2, 3], [3], [4, 5, 6], [5]]
    # b: 1, 2, 3 (+ detail), 4 (10, inclusive start); not 5 or 6, nor 5's detail
    assert [[r["tid"] for r in p.items] for p in b] == [[1, 2, 3], [3], [4]]
    assert [(m.partition_key, m.pages, m.items) for m in manifests] == [("a", 4, 7), ("b", 3, 5)]
    assert manifests[0].windows == ((_at(-5), _at(15)),) and manifests[0].path == manifests[1].path
    # Each manifest lists the positions of its pages: a reader parses only those.
    assert [m.select.pages for m in manifests if m.select] == [(0, 1, 2, 3), (0, 1, 2)]
    # A partition fetched alone later replaces its pointer; the other still reads the shared file.
    alone = list_page([{"tid": 9, "modified": _top(0)}])
    write(lake, "a", [alone])
    assert read(lake, "a") == [alone] and len(read(lake, "b")) == 3


@pytest.mark.parametrize("local", [True, False], ids=["local", "object-store"])
def test_a_listing_answers_as_has_partition_from_one_directory_read(
        tmp_path: Path, local: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if local:
        lake, fs = PageLake(tmp_path), pafs.LocalFileSystem()
    else:
        lake, store = memory_lake()
        fs = pafs.SubTreeFileSystem("bucket", store)               # where the lake's paths are
    page = list_page([{"tid": 1, "modified": _top(5)}])
    for key in ("whole", "short", "gone", "broken"):
        write(lake, key, [page])
    lake.write_shared(shop_id="shop-1", stream="trades.increment", pages=iter([page]),
                      selections=_selections([("a", 0, 30), ("b", 30, 60)]))

    def path_of(key: str) -> str:
        return str(lake.manifest(shop_id="shop-1", stream="trades.increment", partition_key=key).path)

    with fs.open_output_stream(path_of("short")) as handle:      # not the size its manifest records
        handle.write(b"PAR1")
    fs.delete_file(path_of("gone"))                               # a manifest naming no file
    manifest = lake.manifest_path(shop_id="shop-1", stream="trades.increment", partition_key="broken")
    with fs.open_output_stream(str(manifest)) as handle:          # a manifest that does not parse
        handle.write(b"{not json")

    def has(key: str) -> bool:
        return lake.has_partition(shop_id="shop-1", stream="trades.increment", partition_key=key)

    keys = ["never", "whole", "a", "short", "b", "gone", "a/../whole"]
    listing = lake.listing(shop_id="shop-1", stream="trades.increment")
    assert list(listing.published(keys)) == [key for key in keys if has(key)] == ["whole", "a", "b"]
    with pytest.raises(orjson.JSONDecodeError):                   # as has_partition raises
        has("broken")
    with pytest.raises(orjson.JSONDecodeError):
        list(listing.published(["whole", "broken"]))
    # Only a listed manifest is opened: the absent keys cost nothing after the one directory read.
    opened: list[str] = []
    manifest_of = PageLake.manifest
    monkeypatch.setattr(PageLake, "manifest",
                        lambda self, **kw: opened.append(kw["partition_key"]) or manifest_of(self, **kw))
    assert list(listing.published([f"2026-11-26-{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]
                                  + ["whole"])) == ["whole"] and opened == ["whole"]
    # A listing is a snapshot; a directory that does not exist lists nothing.
    write(lake, "later", [page])
    assert list(listing.published(["later"])) == [] and has("later")
    assert list(lake.listing(shop_id="shop-9", stream="trades.increment").published(["whole"])) == []
