"""PageLake: byte-exact round trips, re-reads parsed as at fetch, atomic publish, interrupted writes,
bounded memory, layout."""

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
from ordersync_pipeline.top.pages import REFUNDS, TRADES, ListShape, Page, parse_list_body
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.paging import iter_increment_pages, iter_sold_pages
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.top.testing import CannedGateway, replay

SAMPLES = Path(__file__).parent / "data" / "top-samples"
START = datetime(2026, 11, 26, 10, 10, tzinfo=SHANGHAI)
END = datetime(2026, 11, 26, 10, 30, tzinfo=SHANGHAI)
FETCHED = datetime(2026, 11, 26, 2, 35, 1, 123456, tzinfo=timezone.utc)
KEY = "2026-11-26-10:15"
INCREMENT = "taobao.trades.sold.increment.get"
SOLD = "taobao.trades.sold.get"


def page_from_sample(name: str, page_no: int = 1, *, shop_id: str = "shop-1") -> Page:
    body = (SAMPLES / name).read_bytes()
    method = INCREMENT if "increment" in name else SOLD
    trades, total, has_next = parse_list_body(body, TRADES, method=method)
    return Page(shop_id=shop_id, method=method, window_start=START, window_end=END,
                page_no=page_no, page_size=100, request_id=f"req{page_no}", fetched_at=FETCHED,
                body=body, items=trades, total_results=total, has_next=has_next)


def sample_pages() -> list[Page]:
    return [page_from_sample("trades_sold_increment_get_has_next.json", 2),
            page_from_sample("trades_sold_get_success.json", 1),
            page_from_sample("trades_sold_get_simplify_true.json", 3)]


def write(lake: PageLake, pages: object, key: str = KEY) -> object:
    return lake.write_partition(shop_id="shop-1", stream="increment", partition_key=key,
                                pages=pages)  # type: ignore[arg-type]


def read(lake: PageLake, key: str = KEY, shape: ListShape = TRADES) -> list[Page]:
    return list(lake.read_partition(shop_id="shop-1", stream="increment", partition_key=key, shape=shape))


def test_round_trip_is_byte_exact_and_rebuilds_equal_pages(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    pages = sample_pages()
    manifest = write(lake, iter(pages))
    back = read(lake)
    assert back == pages  # every field, trades re-parsed from the body (both body shapes)
    assert [p.body for p in back] == [p.body for p in pages]
    assert back[0].items[0]["tid"] == 3811877752109934217 and back[0].has_next is True
    assert isinstance(back[1].items[1]["orders"], list) and back[1].total_results == 2
    assert back[0].fetched_at == FETCHED and back[0].window_start == START
    assert (manifest.pages, manifest.items) == (3, 6)  # type: ignore[attr-defined]


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
    assert (doc["format"], doc["pages"], doc["items"], doc["file"]) == (2, 4, 8, path.name)
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
        lake.read_partition(shop_id="shop-1", stream="increment", partition_key=KEY, shape=TRADES)


def _failing(pages: list[Page], after: int) -> Iterator[Page]:
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


def test_only_the_body_is_compressed_and_files_with_every_column_compressed_still_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # zstd on the ten small columns cost more CPU than on the body; lakes written before keep reading.
    lake = PageLake(tmp_path)
    manifest = write(lake, sample_pages())
    group = pq.ParquetFile(manifest.path).metadata.row_group(0)  # type: ignore[attr-defined]
    codecs = {group.column(i).path_in_schema: group.column(i).compression for i in range(group.num_columns)}
    assert codecs.pop("body") == "ZSTD" and set(codecs.values()) == {"UNCOMPRESSED"}
    assert manifest.sha256 == hashlib.sha256(manifest.path.read_bytes()).hexdigest()  # type: ignore[attr-defined]

    monkeypatch.setattr("ordersync_pipeline.sync.lake._COMPRESSION", "zstd")  # the earlier layout
    old = write(lake, sample_pages(), key="2026-11-26-10:30")
    group = pq.ParquetFile(old.path).metadata.row_group(0)  # type: ignore[attr-defined]
    assert {group.column(i).compression for i in range(group.num_columns)} == {"ZSTD"}
    monkeypatch.undo()
    assert read(lake, key="2026-11-26-10:30") == read(lake) == sample_pages()


def test_a_file_longer_than_its_manifest_says_is_refused(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    manifest = write(lake, sample_pages())
    with open(manifest.path, "ab") as handle:  # type: ignore[attr-defined]
        handle.write(b"x")
    with pytest.raises(PartitionCorrupt, match="manifest says"):
        read(lake)


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

    def pages() -> Iterator[Page]:
        nonlocal arrow_peak
        for page_no in range(1, 2001):
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
            body = template.replace(b"REQID", b"r%08d" % page_no)  # a fresh ~150 KB object per page
            yield Page(shop_id="shop-1", method=INCREMENT, window_start=START, window_end=END,
                       page_no=page_no, page_size=100, request_id=f"r{page_no:08d}",
                       fetched_at=FETCHED, body=body, items=trades, total_results=None,
                       has_next=page_no < 2000)

    lake = PageLake(tmp_path)
    tracemalloc.start()
    try:
        manifest = write(lake, pages())
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (manifest.pages, manifest.items) == (2000, 200_000)  # type: ignore[attr-defined]
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
        pages_read = lake.read_partition(shop_id="shop-1", stream="increment", partition_key=KEY,
                                         shape=TRADES)
        count = sum(len(page.items) for page, _ in zip(pages_read, range(300)))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert read_peak < 50 * 2**20, f"python peak while reading {read_peak / 2**20:.1f} MB"


# -- one parser: what the pager read is what the lake gives back -----------------------------------

def _client(url: str) -> TopClient:
    return TopClient(gateway=url, app_key="k", app_secret="s", recorder=ListRecorder(),
                     retry=RetryPolicy(max_attempts=1, base_delay_s=0.0))


def test_lone_surrogate_page_reads_back_as_fetched(tmp_path: Path) -> None:
    """Issue 6.5: orjson rejects a lone UTF-16 surrogate, the client's parser falls back to the
    stdlib and accepts it; the lake reader must parse the stored body the same way, not fail every
    load of the partition (the normaliser decides what to do with the text)."""
    body = (b'{"trades_sold_get_response":{"has_next":false,"request_id":"r1","trades":{"trade":['
            b'{"tid":3812094471235568392,"title":"cup \\ud800 black","modified":"2026-11-26 10:12:00",'
            b'"orders":{"order":[{"oid":3812094471235568392,"title":"\\ud800"}]}}]}}}')
    with CannedGateway(replay([(200, body)])) as gw:
        fetched = list(iter_sold_pages(_client(gw.url), shop_id="shop-1", session="x",
                                       start_created=START, end_created=END, fields="tid,title,orders"))
    assert fetched[0].items[0]["title"] == "cup \ud800 black"  # accepted at fetch time
    lake = PageLake(tmp_path)
    write(lake, fetched)
    back = read(lake)
    assert [p.items for p in back] == [p.items for p in fetched]
    assert back[0].items[0]["orders"] == [{"oid": 3812094471235568392, "title": "\ud800"}]


def test_ids_beyond_64_bits_read_back_as_fetched(tmp_path: Path) -> None:
    """The other orjson gap the client's parser covers: a 20+ digit integer stays an exact int."""
    body = (b'{"trades_sold_increment_get_response":{"total_results":1,"request_id":"r1","trades":'
            b'{"trade":[{"tid":123456789012345678901234,"modified":"2026-11-26 10:12:00"}]}}}')
    with CannedGateway(replay([(200, body)])) as gw:
        fetched = list(iter_increment_pages(_client(gw.url), shop_id="shop-1", session="x",
                                            start_modified=START, end_modified=END, fields="tid"))
    lake = PageLake(tmp_path)
    write(lake, fetched)
    assert read(lake)[0].items == fetched[0].items == [
        {"tid": 123456789012345678901234, "modified": "2026-11-26 10:12:00"}]


def test_the_lake_stores_any_list_and_the_caller_names_its_shape(tmp_path: Path) -> None:
    body = (SAMPLES / "refunds_receive_get.json").read_bytes()
    items, total, has_next = parse_list_body(body, REFUNDS, method="taobao.refunds.receive.get")
    page = Page(shop_id="shop-1", method="taobao.refunds.receive.get", window_start=START,
                window_end=END, page_no=1, page_size=100, request_id="z29cpapr4oaqx",
                fetched_at=FETCHED, body=body, items=items, total_results=total, has_next=has_next)
    lake = PageLake(tmp_path)
    manifest = lake.write_partition(shop_id="shop-1", stream="refunds", partition_key=KEY, pages=[page])
    back = list(lake.read_partition(shop_id="shop-1", stream="refunds", partition_key=KEY,
                                    shape=REFUNDS))
    assert back == [page] and back[0].items[0]["refund_id"] == "241871234567890001"
    assert manifest.items == 1


def test_a_stored_body_that_does_not_parse_is_a_corrupt_partition(tmp_path: Path) -> None:
    # A sold.get body stored under the increment method: its envelope is not that method's.
    page = replace(page_from_sample("trades_sold_get_success.json"), method=INCREMENT)
    lake = PageLake(tmp_path)
    write(lake, [page])
    with pytest.raises(PartitionCorrupt, match=r"page 1 \(request_id req1\) does not parse as a trades "
                                               r"list: .*expected trades_sold_increment_get_response.*"
                                               r"fetch the partition again"):
        read(lake)


def test_a_format_1_manifest_is_still_read(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    write(lake, sample_pages())
    path = lake.manifest_path(shop_id="shop-1", stream="increment", partition_key=KEY)
    doc = orjson.loads(path.read_bytes())
    doc["format"], doc["trades"] = 1, doc.pop("items")
    path.write_bytes(orjson.dumps(doc))
    assert lake.manifest(shop_id="shop-1", stream="increment", partition_key=KEY).items == 6
    assert read(lake) == sample_pages()
    doc["format"] = 99
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(PartitionCorrupt, match="unknown manifest format 99"):
        read(lake)


def test_reading_a_partition_does_not_import_pandas(tmp_path: Path) -> None:
    """Loader processes only read the lake: pyarrow's conversion of zoned timestamps imported pandas
    (~80 MB in each), so the lake converts them itself; times still read back exact (round trip above)."""
    import subprocess
    import sys

    write(PageLake(tmp_path), iter(sample_pages()))
    script = (
        "import sys\n"
        "from ordersync_pipeline.sync.lake import PageLake\n"
        "from ordersync_pipeline.top.pages import TRADES\n"
        f"pages = list(PageLake({str(tmp_path)!r}).read_partition(shop_id='shop-1', stream='increment',\n"
        f"                                                        partition_key={KEY!r}, shape=TRADES))\n"
        "assert len(pages) == 3 and pages[0].fetched_at.tzinfo is not None, pages\n"
        "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
