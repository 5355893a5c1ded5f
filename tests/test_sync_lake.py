"""PageLake: byte-exact round trips, atomic publish, interrupted writes, bounded memory, layout."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ordersync_pipeline.sync.lake import (
    PAGE_SCHEMA, PageLake, PartitionCorrupt, PartitionMissing,
)
from ordersync_pipeline.sync.pages import TradePage, trades_from_body
from ordersync_pipeline.timeutil import SHANGHAI

SAMPLES = Path(__file__).parent / "data" / "top-samples"
START = datetime(2026, 11, 26, 10, 10, tzinfo=SHANGHAI)
END = datetime(2026, 11, 26, 10, 30, tzinfo=SHANGHAI)
FETCHED = datetime(2026, 11, 26, 2, 35, 1, 123456, tzinfo=timezone.utc)
KEY = "2026-11-26-10:15"
INCREMENT = "taobao.trades.sold.increment.get"


def page_from_sample(name: str, page_no: int = 1, *, shop_id: str = "shop-1") -> TradePage:
    body = (SAMPLES / name).read_bytes()
    trades, total, has_next = trades_from_body(body)
    return TradePage(shop_id=shop_id, method=INCREMENT, window_start=START, window_end=END,
                     page_no=page_no, page_size=100, request_id=f"req{page_no}", fetched_at=FETCHED,
                     body=body, trades=trades, total_results=total, has_next=has_next)


def sample_pages() -> list[TradePage]:
    return [page_from_sample("trades_sold_increment_get_has_next.json", 2),
            page_from_sample("trades_sold_get_success.json", 1),
            page_from_sample("trades_sold_get_simplify_true.json", 3)]


def write(lake: PageLake, pages: object, key: str = KEY) -> object:
    return lake.write_partition(shop_id="shop-1", stream="increment", partition_key=key,
                                pages=pages)  # type: ignore[arg-type]


def read(lake: PageLake, key: str = KEY) -> list[TradePage]:
    return list(lake.read_partition(shop_id="shop-1", stream="increment", partition_key=key))


def test_round_trip_is_byte_exact_and_rebuilds_equal_pages(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    pages = sample_pages()
    manifest = write(lake, iter(pages))
    back = read(lake)
    assert back == pages  # every field, trades re-parsed from the body (both body shapes)
    assert [p.body for p in back] == [p.body for p in pages]
    assert back[0].trades[0]["tid"] == 3811877752109934217 and back[0].has_next is True
    assert isinstance(back[1].trades[1]["orders"], list) and back[1].total_results == 2
    assert back[0].fetched_at == FETCHED and back[0].window_start == START
    assert (manifest.pages, manifest.trades) == (3, 6)  # type: ignore[attr-defined]


def test_manifest_records_counts_windows_and_file_hash(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    other = replace(page_from_sample("trades_sold_get_success.json"), window_start=END,
                    window_end=END + timedelta(minutes=5))
    manifest = lake.write_partition(shop_id="shop-1", stream="increment", partition_key=KEY,
                                    pages=[*sample_pages(), other])
    path = lake.partition_path(shop_id="shop-1", stream="increment", partition_key=KEY)
    assert manifest.path == path and path.exists()
    assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest.windows == ((START, END), (END, END + timedelta(minutes=5)))
    doc = orjson.loads(lake.manifest_path(shop_id="shop-1", stream="increment",
                                          partition_key=KEY).read_bytes())
    assert (doc["pages"], doc["trades"], doc["file"]) == (4, 8, path.name)
    assert doc["windows"][0] == ["2026-11-26T10:10:00+08:00", "2026-11-26T10:30:00+08:00"]
    assert lake.manifest(shop_id="shop-1", stream="increment", partition_key=KEY) == manifest


def test_layout_columns_and_no_duplicated_trades(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    write(lake, sample_pages())
    path = tmp_path / "pages/stream=increment/shop_id=shop-1/partition=2026-11-26-10:15.parquet"
    assert path.exists()
    table = pq.read_table(path)
    assert table.schema.equals(PAGE_SCHEMA)
    assert table.schema.names == ["shop_id", "method", "window_start", "window_end", "page_no",
                                  "page_size", "request_id", "fetched_at", "total_results",
                                  "has_next", "body"]
    assert table.schema.field("body").type == pa.binary()
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "partition=2026-11-26-10:15.manifest.json", "partition=2026-11-26-10:15.parquet"]


def test_unsafe_path_characters_are_escaped(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    path = lake.partition_path(shop_id="../evil", stream="inc/rement", partition_key="a b%/..")
    assert path == tmp_path / "pages/stream=inc%2Frement/shop_id=..%2Fevil/partition=a%20b%25%2F...parquet"
    assert path.resolve().is_relative_to(tmp_path.resolve())
    with pytest.raises(ValueError, match="partition_key"):
        lake.partition_path(shop_id="s", stream="increment", partition_key="")


def test_missing_partition_is_a_clear_error(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    assert not lake.has_partition(shop_id="shop-1", stream="increment", partition_key=KEY)
    with pytest.raises(PartitionMissing, match="partition=2026-11-26-10:15 is missing or incomplete"):
        lake.read_partition(shop_id="shop-1", stream="increment", partition_key=KEY)


def _failing(pages: list[TradePage], after: int) -> Iterator[TradePage]:
    for i, page in enumerate(pages):
        if i == after:
            raise ConnectionError("gateway went away")
        yield page


def test_interrupted_write_leaves_no_readable_partition_and_no_files(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    pages = sample_pages() * 40  # > one row group, so some were already on disk when it failed
    with pytest.raises(ConnectionError):
        write(lake, _failing(pages, after=110))
    assert not lake.has_partition(shop_id="shop-1", stream="increment", partition_key=KEY)
    with pytest.raises(PartitionMissing):
        read(lake)
    directory = tmp_path / "pages/stream=increment/shop_id=shop-1"
    assert list(directory.iterdir()) == []  # no manifest, no data file, no temp file


def test_interrupted_rerun_keeps_the_previous_version(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    first = sample_pages()[:1]
    write(lake, first)
    with pytest.raises(ConnectionError):
        write(lake, _failing(sample_pages(), after=2))
    assert read(lake) == first


def test_rerun_replaces_the_partition(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    write(lake, sample_pages())
    again = sample_pages()[1:]
    manifest = write(lake, again)
    assert read(lake) == again and manifest.pages == 2  # type: ignore[attr-defined]
    assert len(list(manifest.path.parent.iterdir())) == 2  # type: ignore[attr-defined]


def test_file_not_matching_manifest_is_refused(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    manifest = write(lake, sample_pages())
    path: Path = manifest.path  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PartitionCorrupt, match="manifest says"):
        read(lake)
    path.unlink()
    assert not lake.has_partition(shop_id="shop-1", stream="increment", partition_key=KEY)
    with pytest.raises(PartitionCorrupt, match="does not exist"):
        read(lake)


def test_empty_partition_and_wrong_shop(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    manifest = write(lake, [])
    assert manifest.pages == 0 and read(lake) == []  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="page of shop 'shop-2'"):
        write(lake, [page_from_sample("trades_sold_get_success.json", shop_id="shop-2")], key="k2")
    assert not lake.has_partition(shop_id="shop-1", stream="increment", partition_key="k2")


def test_naive_page_time_is_refused(tmp_path: Path) -> None:
    page = replace(page_from_sample("trades_sold_get_success.json"), fetched_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="fetched_at must be timezone-aware"):
        write(PageLake(tmp_path), [page])


def test_memory_stays_bounded_for_2000_pages_of_100_trades(tmp_path: Path) -> None:
    """Pages come from a generator and are dropped after writing; neither Python nor Arrow memory
    may grow with the number of pages (2,000 pages of ~150 KB = ~300 MB of bodies)."""
    trade = orjson.loads((SAMPLES / "trades_sold_get_success.json").read_bytes())[
        "trades_sold_get_response"]["trades"]["trade"][1]
    trades = [trade] * 100
    template = orjson.dumps({"trades_sold_increment_get_response": {
        "has_next": True, "trades": {"trade": trades}, "request_id": "REQID"}})
    arrow_peak = 0

    def pages() -> Iterator[TradePage]:
        nonlocal arrow_peak
        for page_no in range(1, 2001):
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
            body = template.replace(b"REQID", b"r%08d" % page_no)  # a fresh ~150 KB object per page
            yield TradePage(shop_id="shop-1", method=INCREMENT, window_start=START, window_end=END,
                            page_no=page_no, page_size=100, request_id=f"r{page_no:08d}",
                            fetched_at=FETCHED, body=body, trades=trades, total_results=None,
                            has_next=page_no < 2000)

    lake = PageLake(tmp_path)
    tracemalloc.start()
    try:
        manifest = write(lake, pages())
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (manifest.pages, manifest.trades) == (2000, 200_000)  # type: ignore[attr-defined]
    assert len(template) * 2000 > 250 * 2**20
    assert python_peak < 50 * 2**20, f"python peak {python_peak / 2**20:.1f} MB"
    assert arrow_peak < 100 * 2**20, f"arrow allocation reached {arrow_peak / 2**20:.1f} MB"
    parquet = pq.ParquetFile(manifest.path)  # type: ignore[attr-defined]
    assert parquet.metadata.num_row_groups == 40
    assert parquet.metadata.num_rows == 2000
    # Reading is a generator too: 300 pages (~30,000 parsed trades, ~150 MB if they were all kept
    # alive) must not pile up. Tracing all 2,000 would only make the test slow.
    tracemalloc.start()
    try:
        pages_read = lake.read_partition(shop_id="shop-1", stream="increment", partition_key=KEY)
        count = sum(len(page.trades) for page, _ in zip(pages_read, range(300)))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert read_peak < 50 * 2**20, f"python peak while reading {read_peak / 2**20:.1f} MB"
