"""The raw page lake: every fetched ``top.pages.Page`` kept as received, as Parquet, so any partition
can be rebuilt from disk without calling the API again. The lake stores pages of any list API; it
knows no stream's layout: ``read_partition`` re-parses each body with the ``ListShape`` its caller
names, through ``top.pages.parse_list_body``, the same parser the pager used at fetch time.

Layout (one data file and one manifest per shop, stream and partition key)::

    ROOT/pages/stream=increment/shop_id=shop-1/partition=2026-11-26-10:15.parquet
    ROOT/pages/stream=increment/shop_id=shop-1/partition=2026-11-26-10:15.manifest.json

Path parts are percent-escaped except ``A-Z a-z 0-9 _ . - :`` (``:`` kept so Dagster time keys stay
readable; fine on POSIX), so a key can neither climb out of its directory nor clash with another.

Columns: shop_id, method, window_start, window_end, page_no, page_size, request_id, fetched_at,
total_results, has_next, body. Records are not stored twice: readers re-parse ``body``.

Publishing protocol (why a half-written partition is never taken for a whole one):

1. Pages stream into a hidden temp file beside the target, one row group per ``PAGES_PER_ROW_GROUP``
   pages, so memory stays flat however many pages arrive. If the page iterator raises, the temp file
   is deleted and nothing else is touched (a previous version of the partition stays published).
2. After the last page: fsync, hash; remove the old manifest (the partition is now "absent", never
   "complete with the wrong file"), atomically rename the data file into place, then write the new
   manifest atomically. The manifest names the page/item counts, the windows and the file's sha256.
3. Readers require the manifest and check the file's size and sha256 against it, hashing the very
   file handle they then read from, so a concurrent re-publish cannot mix two versions.

A writer killed outright (``kill -9``) leaves its temp file behind. Temp names carry the writer's host,
pid and process start time; the first write into a directory (per ``PageLake``) and ``sweep_temps()``
remove temps whose writer no longer runs on this host, and temps of other hosts or of unknown writers
only once untouched for ``STALE_TEMP_AGE`` (see ``sync/lake_files.py``). A live writer's temp stays.

Lake files hold buyer identifiers: data files and manifests are created ``0o600``, the directories
under the root ``0o700`` (looser ones left by older versions are tightened when next written).

Errors: ``LakeError`` (base) > ``PartitionMissing`` (no manifest: never written, interrupted, or being
re-published) and ``PartitionCorrupt`` (manifest and data file disagree, or a stored body no longer
parses).
"""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ordersync_pipeline.sync.lake_files import (
    DIR_MODE,
    STALE_TEMP_AGE,
    create_private,
    sweep_directory,
    temp_name,
)
from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.top.errors import TopError
from ordersync_pipeline.top.pages import ListShape, Page, parse_list_body

__all__ = ["PageLake", "LakeManifest", "LakeError", "PartitionMissing", "PartitionCorrupt",
           "PAGE_SCHEMA", "PAGES_PER_ROW_GROUP", "STALE_TEMP_AGE"]

# ~50 pages of <= 100 trades: a few MB per row group, large enough to compress well.
PAGES_PER_ROW_GROUP = 50

# Arrow's default mimalloc pool keeps freed row-group buffers for reuse; with several fetch threads
# each writing its own partition that held ~80 MB more at peak (400k-trade load, measured). The
# system allocator hands them back, and the lake's buffers are few and large, so nothing is lost.
pa.set_memory_pool(pa.system_memory_pool())
# Format 2 counts "items" (any list API); format 1 called them "trades" and is still read.
MANIFEST_FORMAT = 2
_READABLE_FORMATS = {1: "trades", 2: "items"}
_TS = pa.timestamp("us", tz="UTC")
PAGE_SCHEMA = pa.schema([
    pa.field("shop_id", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("window_start", _TS, nullable=False),
    pa.field("window_end", _TS, nullable=False),
    pa.field("page_no", pa.int32(), nullable=False),
    pa.field("page_size", pa.int32(), nullable=False),
    pa.field("request_id", pa.string()),
    pa.field("fetched_at", _TS, nullable=False),
    pa.field("total_results", pa.int64()),
    pa.field("has_next", pa.bool_()),
    pa.field("body", pa.binary(), nullable=False),
])
_SMALL_COLUMNS = [name for name in PAGE_SCHEMA.names if name != "body"]
_SAFE = "_.-:"


class LakeError(Exception):
    """Base of the page-lake errors."""


class PartitionMissing(LakeError, LookupError):
    """No published partition: never written, its write was interrupted, or it is being re-published."""


class PartitionCorrupt(LakeError):
    """The manifest and the data file disagree (size or sha256), the data file is gone, or a stored
    page body no longer parses as its list."""


@dataclass(frozen=True)
class LakeManifest:
    shop_id: str
    stream: str
    partition_key: str
    path: Path                                   # the published Parquet file
    pages: int
    items: int                                   # records over all pages (trades, refunds, ...)
    bytes: int
    sha256: str
    windows: tuple[tuple[datetime, datetime], ...]  # distinct (start, end) in first-seen order
    written_at: datetime

    def to_json(self) -> builtins.bytes:
        return orjson.dumps({
            "format": MANIFEST_FORMAT, "shop_id": self.shop_id, "stream": self.stream,
            "partition_key": self.partition_key, "file": self.path.name, "pages": self.pages,
            "items": self.items, "bytes": self.bytes, "sha256": self.sha256,
            "windows": [[s.isoformat(), e.isoformat()] for s, e in self.windows],
            "written_at": self.written_at.isoformat(),
        }, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: builtins.bytes, directory: Path) -> LakeManifest:
        doc = orjson.loads(data)
        items_key = _READABLE_FORMATS.get(doc.get("format"))
        if items_key is None:
            raise PartitionCorrupt(f"unknown manifest format {doc.get('format')!r} in {directory}")
        return cls(shop_id=doc["shop_id"], stream=doc["stream"], partition_key=doc["partition_key"],
                   path=directory / doc["file"], pages=doc["pages"], items=doc[items_key],
                   bytes=doc["bytes"], sha256=doc["sha256"],
                   windows=tuple((datetime.fromisoformat(s), datetime.fromisoformat(e))
                                 for s, e in doc["windows"]),
                   written_at=datetime.fromisoformat(doc["written_at"]))


def _escape(part: str, what: str) -> str:
    if not part:
        raise ValueError(f"{what} must not be empty")
    return quote(part, safe=_SAFE)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(handle: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class _PageBuffer:
    """Column lists for up to one row group of pages."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in PAGE_SCHEMA.names}

    def __len__(self) -> int:
        return len(self.columns["body"])

    def add(self, page: Page) -> None:
        cols = self.columns
        cols["shop_id"].append(page.shop_id)
        cols["method"].append(page.method)
        cols["window_start"].append(require_aware(page.window_start, "page window_start"))
        cols["window_end"].append(require_aware(page.window_end, "page window_end"))
        cols["page_no"].append(page.page_no)
        cols["page_size"].append(page.page_size)
        cols["request_id"].append(page.request_id)
        cols["fetched_at"].append(require_aware(page.fetched_at, "page fetched_at"))
        cols["total_results"].append(page.total_results)
        cols["has_next"].append(page.has_next)
        cols["body"].append(page.body)

    def flush(self, writer: pq.ParquetWriter) -> None:
        if len(self):
            writer.write_batch(pa.record_batch(self.columns, schema=PAGE_SCHEMA))
            self.columns = {name: [] for name in PAGE_SCHEMA.names}


class PageLake:
    """Raw ``Page``s under ``root``, one atomically published Parquet file per partition."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._prepared: set[Path] = set()  # directories made private and swept by this instance

    def __repr__(self) -> str:
        return f"PageLake({str(self.root)!r})"

    # -- paths ----------------------------------------------------------------------------------

    def _directory(self, shop_id: str, stream: str) -> Path:
        return (self.root / "pages" / f"stream={_escape(stream, 'stream')}"
                / f"shop_id={_escape(shop_id, 'shop_id')}")

    def partition_path(self, *, shop_id: str, stream: str, partition_key: str) -> Path:
        """Where the partition's Parquet file lives once published."""
        name = f"partition={_escape(partition_key, 'partition_key')}.parquet"
        return self._directory(shop_id, stream) / name

    def manifest_path(self, *, shop_id: str, stream: str, partition_key: str) -> Path:
        path = self.partition_path(shop_id=shop_id, stream=stream, partition_key=partition_key)
        return path.with_name(path.name.removesuffix(".parquet") + ".manifest.json")

    # -- housekeeping ---------------------------------------------------------------------------

    def sweep_temps(self) -> list[Path]:
        """Remove temp files left anywhere in the lake by writers that are gone (e.g. ``kill -9``);
        returns the removed paths. Temps of live writers stay."""
        removed: list[Path] = []
        for directory, _, names in os.walk(self.root / "pages"):
            removed += sweep_directory(Path(directory), names)
        return removed

    def _prepare(self, directory: Path) -> None:
        """Create ``directory`` and its parents under the root owner-only, tighten looser ones this
        user owns, and sweep stale temps from it; once per directory per instance."""
        if directory in self._prepared and directory.is_dir():
            return
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        parts = directory.relative_to(self.root).parts
        for depth in range(1, len(parts) + 1):
            path = self.root.joinpath(*parts[:depth])
            try:
                path.mkdir(mode=DIR_MODE)
            except FileExistsError:
                info = path.stat()
                if info.st_mode & 0o077 and info.st_uid == os.getuid():
                    path.chmod(DIR_MODE)
        sweep_directory(directory)
        self._prepared.add(directory)

    # -- write ----------------------------------------------------------------------------------

    def write_partition(self, *, shop_id: str, stream: str, partition_key: str,
                        pages: Iterable[Page]) -> LakeManifest:
        """Stream ``pages`` into the partition and publish it; replaces an earlier version atomically.

        Pages must belong to ``shop_id``. If ``pages`` raises, nothing is published and the earlier
        version (if any) stays as it was; the exception propagates.
        """
        target = self.partition_path(shop_id=shop_id, stream=stream, partition_key=partition_key)
        manifest_path = self.manifest_path(shop_id=shop_id, stream=stream, partition_key=partition_key)
        self._prepare(target.parent)
        temp = target.with_name(temp_name(target.name))
        try:
            page_count, item_count, windows = self._write_pages(temp, shop_id, pages)
            with open(temp, "rb") as handle:
                sha256, size = _sha256(handle)
            manifest = LakeManifest(
                shop_id=shop_id, stream=stream, partition_key=partition_key, path=target,
                pages=page_count, items=item_count, bytes=size, sha256=sha256,
                windows=tuple(windows), written_at=datetime.now(timezone.utc))
            self._publish(temp, target, manifest_path, manifest)
        finally:
            temp.unlink(missing_ok=True)
        return manifest

    @staticmethod
    def _write_pages(temp: Path, shop_id: str, pages: Iterable[Page],
                     ) -> tuple[int, int, dict[tuple[datetime, datetime], None]]:
        page_count = item_count = 0
        windows: dict[tuple[datetime, datetime], None] = {}  # an ordered set
        buffer = _PageBuffer()
        with create_private(temp) as sink:
            # Dictionary encoding and statistics are useless on the body column and cost memory.
            with pq.ParquetWriter(sink, PAGE_SCHEMA, compression="zstd", use_dictionary=_SMALL_COLUMNS,
                                  write_statistics=_SMALL_COLUMNS) as writer:
                for page in pages:
                    if page.shop_id != shop_id:
                        raise ValueError(f"page of shop {page.shop_id!r} written to shop {shop_id!r}")
                    buffer.add(page)
                    page_count += 1
                    item_count += len(page.items)
                    windows[(page.window_start, page.window_end)] = None
                    if len(buffer) >= PAGES_PER_ROW_GROUP:
                        buffer.flush(writer)
                buffer.flush(writer)
            sink.flush()
            os.fsync(sink.fileno())
        return page_count, item_count, windows

    @staticmethod
    def _publish(temp: Path, target: Path, manifest_path: Path, manifest: LakeManifest) -> None:
        # Order matters: without a manifest the partition reads as missing, never as complete with
        # a file the manifest does not describe.
        manifest_path.unlink(missing_ok=True)
        os.replace(temp, target)
        manifest_temp = manifest_path.with_name(temp_name(manifest_path.name))
        try:
            with create_private(manifest_temp) as handle:
                handle.write(manifest.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(manifest_temp, manifest_path)
        finally:
            manifest_temp.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    # -- read -----------------------------------------------------------------------------------

    def manifest(self, *, shop_id: str, stream: str, partition_key: str) -> LakeManifest:
        """The published manifest; raises ``PartitionMissing`` when there is none."""
        path = self.manifest_path(shop_id=shop_id, stream=stream, partition_key=partition_key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PartitionMissing(
                f"lake partition shop_id={shop_id} stream={stream} partition={partition_key} is "
                f"missing or incomplete (no manifest at {path})") from None
        return LakeManifest.from_json(data, path.parent)

    def has_partition(self, *, shop_id: str, stream: str, partition_key: str) -> bool:
        """True when a manifest is published and its data file has the recorded size (no hashing)."""
        try:
            manifest = self.manifest(shop_id=shop_id, stream=stream, partition_key=partition_key)
            return manifest.path.stat().st_size == manifest.bytes
        except (PartitionMissing, FileNotFoundError):
            return False

    def read_partition(self, *, shop_id: str, stream: str, partition_key: str,
                       shape: ListShape | Mapping[str, ListShape]) -> Iterator[Page]:
        """The partition's pages in written order, items re-parsed from each body as ``shape`` lays
        them out (the caller knows which list API the stream pages); a mapping names the shape of each
        method whose pages the partition holds (a listing and the detail API completing it).

        Checks happen now, before the first page: ``PartitionMissing`` without a manifest,
        ``PartitionCorrupt`` when the file does not match it. Pages are read a row group at a time; a
        body that does not parse raises ``PartitionCorrupt`` when its page is reached.
        """
        manifest = self.manifest(shop_id=shop_id, stream=stream, partition_key=partition_key)
        try:
            handle = open(manifest.path, "rb")
        except FileNotFoundError:
            raise PartitionCorrupt(f"manifest names {manifest.path}, which does not exist") from None
        try:
            sha256, size = _sha256(handle)
            if (size, sha256) != (manifest.bytes, manifest.sha256):
                raise PartitionCorrupt(
                    f"{manifest.path}: {size} bytes sha256 {sha256[:12]}..., manifest says "
                    f"{manifest.bytes} bytes sha256 {manifest.sha256[:12]}...")
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return _iter_pages(handle, manifest.path, shape)


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


def _iter_pages(handle: IO[bytes], path: Path, shapes: ListShape | Mapping[str, ListShape]) -> Iterator[Page]:
    with handle, pq.ParquetFile(handle) as parquet:
        for batch in parquet.iter_batches(batch_size=PAGES_PER_ROW_GROUP):
            for row in batch.to_pylist():
                if isinstance(shapes, ListShape):
                    shape = shapes
                elif row["method"] in shapes:
                    shape = shapes[row["method"]]
                else:
                    raise PartitionCorrupt(f"{path}: page {row['page_no']} is from {row['method']}, which this "
                                           f"dataset does not read ({sorted(shapes)})")
                try:
                    items, _, _ = parse_list_body(row["body"], shape, method=row["method"],
                                                  shop_id=row["shop_id"])
                except TopError as exc:
                    raise PartitionCorrupt(
                        f"{path}: page {row['page_no']} (request_id {row['request_id']}) does not "
                        f"parse as a {shape.list_key} list: {exc}; fetch the partition again "
                        "(a run without from_lake)") from None
                yield Page(
                    shop_id=row["shop_id"], method=row["method"],
                    window_start=_utc(row["window_start"]), window_end=_utc(row["window_end"]),
                    page_no=row["page_no"], page_size=row["page_size"], request_id=row["request_id"],
                    fetched_at=_utc(row["fetched_at"]), body=row["body"], items=items,
                    total_results=row["total_results"], has_next=row["has_next"])
