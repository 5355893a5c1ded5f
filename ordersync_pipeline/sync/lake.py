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
total_results, has_next, body. Records are not stored twice: readers re-parse ``body``. A detail call
refused for its record is stored as a refusal page in the answer's place (sync/refusals.py).

Publishing protocol (why a half-written partition is never taken for a whole one):

1. Pages stream into a hidden temp file beside the target, one row group per ``PAGES_PER_ROW_GROUP``
   pages, so memory stays flat however many pages arrive. If the page iterator raises, the temp file
   is deleted and nothing else is touched (a previous version of the partition stays published).
2. After the last page: fsync (the sha256 was taken of the bytes as they were written, not re-read);
   remove the old manifest (the partition is now "absent", never "complete with the wrong file"),
   atomically rename the data file into place, then write the new manifest atomically. The manifest names the page/item counts, the windows and the file's sha256.
3. Readers require the manifest and check the file's size and sha256 against it, hashing the very
   bytes (a small file, read whole) or file handle they then parse, so a concurrent re-publish cannot
   mix two versions.

A writer killed outright (``kill -9``) leaves its temp file behind. Temp names carry the writer's host,
pid and process start time; the first write into a directory (per ``PageLake``) and ``sweep_temps()``
remove temps whose writer no longer runs on this host, and temps of other hosts or of unknown writers
only once untouched for ``STALE_TEMP_AGE`` (see ``sync/lake_files.py``). A live writer's temp stays.

Where the lake lives: a local folder (or ``file://`` URL) uses the protocol above; any other pyarrow file
system URL (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``; or a ``pyarrow.fs.FileSystem`` handed
in) has no atomic rename or fsync, so there the data file is written under a name no earlier version
used, and the manifest, written last in one put, is the publish. The previous version's data file is
removed after the new manifest is in place; a data file no manifest names (a writer that died) is removed
by ``sweep_temps()`` once untouched for ``STALE_TEMP_AGE`` (not on every first write, as locally: that
would read every manifest of the directory).

Partitions fetched together (a catch-up's contiguous windows in one API window) share one data file:
``write_shared`` stores the pages once and publishes one manifest per partition naming the file and the
partition's ``Selection`` (sync/lake_select.py); reading such a partition yields only its own records.

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
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit


import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ordersync_pipeline.sync.arrow_columns import column as arrow_column, rows as arrow_rows
from ordersync_pipeline.sync.lake_files import (
    DIR_MODE,
    STALE_TEMP_AGE,
    create_private,
    sweep_directory,
    temp_name,
)
from ordersync_pipeline.sync.lake_select import Selection, SelectionCounter, select_pages
from ordersync_pipeline.sync.refusals import refusal_items
from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.top.errors import TopError
from ordersync_pipeline.top.pages import ListShape, Page, parse_list_body

__all__ = ["PageLake", "PartitionListing", "LakeManifest", "LakeError", "PartitionMissing", "PartitionCorrupt",
           "PAGE_SCHEMA", "PAGES_PER_ROW_GROUP", "STALE_TEMP_AGE"]

# ~50 pages of <= 100 trades: a few MB per row group, large enough to compress well.
PAGES_PER_ROW_GROUP = 50

# Arrow's default mimalloc pool keeps freed row-group buffers for reuse; with several fetch threads
# each writing its own partition that held ~80 MB more at peak (400k-trade load, measured). The
# system allocator hands them back, and the lake's buffers are few and large, so nothing is lost.
pa.set_memory_pool(pa.system_memory_pool())
# Format 2 counts "items" (any list API); format 1 called them "trades" and is still read. Format 3
# adds "select" (a partition sharing its data file with others); written only for such partitions, so
# an older reader never misreads one (it refuses the format instead).
MANIFEST_FORMAT = 2
SHARED_MANIFEST_FORMAT = 3
_READABLE_FORMATS = {1: "trades", 2: "items", 3: "items"}
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
# Only the body is worth compressing: the small columns are a few bytes a page (dictionary-encoded
# where they repeat), and zstd on each of them cost more CPU than the whole body's (one-page increment
# files: ~0.3 ms of ~1.7 ms per partition written and read). Files written with zstd on every column
# (before) read the same: the codec is recorded per column chunk.
_COMPRESSION = {"body": "zstd"}
_SAFE = "_.-:"
# A published file up to this size is read into memory whole, hashed and parsed from there (one read);
# a larger one is hashed in chunks and parsed from the file a row group at a time (memory stays flat).
_READ_WHOLE_BYTES = 4 << 20


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
    # Set when the data file is shared with other partitions: which of its records are this one's.
    select: Selection | None = None

    def to_json(self) -> builtins.bytes:
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT if self.select is None else SHARED_MANIFEST_FORMAT,
            "shop_id": self.shop_id, "stream": self.stream,
            "partition_key": self.partition_key, "file": self.path.name, "pages": self.pages,
            "items": self.items, "bytes": self.bytes, "sha256": self.sha256,
            "windows": [[s.isoformat(), e.isoformat()] for s, e in self.windows],
            "written_at": self.written_at.isoformat(),
        }
        if self.select is not None:
            doc["select"] = self.select.to_json()
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

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
                   written_at=datetime.fromisoformat(doc["written_at"]),
                   select=Selection.from_json(doc["select"]) if doc.get("select") else None)


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


class _HashingSink:
    """The writable file the Parquet writer sees: every byte goes to ``raw`` and into the sha256, so
    the published file need not be read back to be hashed (a file of 50-page row groups is MBs)."""

    def __init__(self, raw: Any) -> None:
        self._raw, self._digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        self._digest.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def close(self) -> None:
        """The Parquet writer does not close a sink it was handed; ``_write_pages`` closes ``raw``."""

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


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
            # Built by arrow_columns.column, not pa.record_batch(dict): pyarrow's list conversion
            # imports pandas (~50 MB in every process that writes the lake).
            arrays = [arrow_column(self.columns[field.name], field.type) for field in PAGE_SCHEMA]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=PAGE_SCHEMA))
            self.columns = {name: [] for name in PAGE_SCHEMA.names}


def _shown(url: str) -> str:
    """``url`` without user info or query (either may hold object-store credentials)."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


class PageLake:
    """Raw ``Page``s under ``root`` (a folder or a pyarrow file system URL), one published Parquet file
    per partition (or one shared by partitions fetched together).

    ``filesystem``: a ``pyarrow.fs.FileSystem`` to use instead of resolving ``root`` (``root`` is then
    the base path inside it), e.g. a ``SubTreeFileSystem`` or an in-memory one in tests.
    """

    def __init__(self, root: Path | str, *, filesystem: pafs.FileSystem | None = None) -> None:
        self.url = str(root)
        self._fs: pafs.FileSystem | None = None   # None: a local folder, written with os calls
        if filesystem is not None:
            self._fs, base = filesystem, str(root)
        elif isinstance(root, Path) or "://" not in self.url:
            base = self.url
        else:
            resolved, base = pafs.FileSystem.from_uri(self.url)
            if not isinstance(resolved, pafs.LocalFileSystem):
                self._fs = resolved
        if self._fs is not None and isinstance(self._fs, pafs.LocalFileSystem):
            self._fs = None
        self.root = Path(base)
        self._prepared: set[Path] = set()  # directories made private and swept by this instance

    def __repr__(self) -> str:
        return f"PageLake({_shown(self.url)!r})"

    @property
    def is_local(self) -> bool:
        """True for a local folder (atomic rename, fsync, private modes)."""
        return self._fs is None

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
        if self._fs is not None:
            for info in self._fs.get_file_info(pafs.FileSelector(str(self.root / "pages"), allow_not_found=True,
                                                                 recursive=True)):
                if info.type == pafs.FileType.Directory:
                    removed += self._sweep_remote(Path(info.path))
            return removed
        for directory, _, names in os.walk(self.root / "pages"):
            removed += sweep_directory(Path(directory), names)
        return removed

    def _sweep_remote(self, directory: Path) -> list[Path]:
        """Data files no manifest in ``directory`` names, untouched for ``STALE_TEMP_AGE``."""
        assert self._fs is not None
        infos = self._fs.get_file_info(pafs.FileSelector(str(directory), allow_not_found=True))
        named: set[str] = set()
        for info in infos:
            if info.path.endswith(".manifest.json"):
                try:
                    named.add(orjson.loads(self._read_bytes(Path(info.path)))["file"])
                except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
                    continue
        removed = []
        now = time.time()
        for info in infos:
            name = Path(info.path).name
            if (info.type == pafs.FileType.File and name.endswith(".parquet") and name not in named
                    and info.mtime is not None
                    and now - info.mtime.timestamp() > STALE_TEMP_AGE.total_seconds()):
                self._fs.delete_file(info.path)
                removed.append(Path(info.path))
        return removed

    def _prepare(self, directory: Path) -> None:
        """Create ``directory`` and its parents under the root owner-only, tighten looser ones this
        user owns, and sweep stale temps from it; once per directory per instance."""
        if self._fs is not None:
            # No sweep here: telling orphans apart means reading every manifest of the directory,
            # thousands of requests on an object store; ``sweep_temps()`` does it when asked.
            if directory not in self._prepared:
                self._fs.create_dir(str(directory), recursive=True)
                self._prepared.add(directory)
            return
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
        manifests = self._write(shop_id=shop_id, stream=stream, file_key=partition_key, pages=pages,
                                selections=None, partition_key=partition_key)
        return manifests[0]

    def write_shared(self, *, shop_id: str, stream: str, pages: Iterable[Page],
                     selections: Sequence[Selection]) -> list[LakeManifest]:
        """Store ``pages`` once and publish one manifest per selection (a partition whose records are
        the selection's among them), in the order given; returns the manifests.

        The data file is written first and each manifest after it, so a partition is readable only
        once its manifest is out; if ``pages`` raises, nothing is published."""
        if not selections:
            raise ValueError("write_shared needs at least one selection")
        keys = [s.partition_key for s in selections]
        file_key = f"{keys[0]}..{keys[-1]}.{uuid.uuid4().hex[:12]}"  # never the name of a live file
        return self._write(shop_id=shop_id, stream=stream, file_key=file_key, pages=pages,
                           selections=selections, partition_key=None)

    def _write(self, *, shop_id: str, stream: str, file_key: str, pages: Iterable[Page],
               selections: Sequence[Selection] | None, partition_key: str | None) -> list[LakeManifest]:
        directory = self._directory(shop_id, stream)
        self._prepare(directory)
        counter = SelectionCounter(selections) if selections else None
        if selections is None:
            assert partition_key is not None
            target = self.partition_path(shop_id=shop_id, stream=stream, partition_key=partition_key)
            if self._fs is not None:  # no atomic replace there: a name no earlier version used
                target = target.with_name(f"{target.name.removesuffix('.parquet')}.{uuid.uuid4().hex[:12]}.parquet")
        else:  # file_key is already a fresh name
            target = directory / f"partition={_escape(file_key, 'partition_key')}.parquet"
        data = target.with_name(temp_name(target.name)) if self._fs is None else target
        try:
            page_count, item_count, windows, sha256, size = self._write_pages(data, shop_id, pages, counter)
            written_at = datetime.now(timezone.utc)
            if counter is None or selections is None:
                assert partition_key is not None
                manifests = [LakeManifest(
                    shop_id=shop_id, stream=stream, partition_key=partition_key, path=target,
                    pages=page_count, items=item_count, bytes=size, sha256=sha256,
                    windows=tuple(windows), written_at=written_at)]
            else:
                manifests = [LakeManifest(
                    shop_id=shop_id, stream=stream, partition_key=sel.partition_key, path=target,
                    pages=counter.pages[sel.partition_key], items=counter.items[sel.partition_key],
                    bytes=size, sha256=sha256, windows=((sel.start, sel.end),), written_at=written_at,
                    select=sel) for sel in counter.indexed()]
            if self._fs is None:
                self._publish_local(data, target, manifests)
            else:
                self._publish_remote(manifests)
        except BaseException:
            if self._fs is not None:
                self._delete_quietly(data)
            raise
        finally:
            if self._fs is None:
                data.unlink(missing_ok=True)
        return manifests

    def _write_pages(self, data: Path, shop_id: str, pages: Iterable[Page], counter: SelectionCounter | None,
                     ) -> tuple[int, int, dict[tuple[datetime, datetime], None], str, int]:
        """Stream ``pages`` into ``data``; returns page and item counts, the windows, and the file's
        sha256 and size."""
        page_count = item_count = 0
        windows: dict[tuple[datetime, datetime], None] = {}  # an ordered set
        buffer = _PageBuffer()
        with (create_private(data) if self._fs is None else self._fs.open_output_stream(str(data))) as raw:
            sink = _HashingSink(raw)
            # Dictionary encoding and statistics are useless on the body column and cost memory.
            with pq.ParquetWriter(sink, PAGE_SCHEMA, compression=_COMPRESSION, use_dictionary=_SMALL_COLUMNS,
                                  write_statistics=_SMALL_COLUMNS) as writer:
                for page in pages:
                    if page.shop_id != shop_id:
                        raise ValueError(f"page of shop {page.shop_id!r} written to shop {shop_id!r}")
                    buffer.add(page)
                    if counter is not None:
                        counter.see(page)
                    page_count += 1
                    item_count += len(page.items)
                    windows[(page.window_start, page.window_end)] = None
                    if len(buffer) >= PAGES_PER_ROW_GROUP:
                        buffer.flush(writer)
                buffer.flush(writer)
            if self._fs is None:
                raw.flush()
                os.fsync(raw.fileno())
        return page_count, item_count, windows, sink.hexdigest(), sink.size

    def _publish_local(self, temp: Path, target: Path, manifests: Sequence[LakeManifest]) -> None:
        # Order matters: without a manifest the partition reads as missing, never as complete with
        # a file the manifest does not describe. A shared file has a fresh name: no manifest names it.
        paths = [self.manifest_path(shop_id=m.shop_id, stream=m.stream, partition_key=m.partition_key)
                 for m in manifests]
        if manifests[0].select is None:
            paths[0].unlink(missing_ok=True)
        os.replace(temp, target)
        for manifest_path, manifest in zip(paths, manifests, strict=True):
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

    def _publish_remote(self, manifests: Sequence[LakeManifest]) -> None:
        """Data is in place; each manifest in one put publishes its partition, then the data file the
        previous version alone used (not a shared one) goes."""
        assert self._fs is not None
        for manifest in manifests:
            path = self.manifest_path(shop_id=manifest.shop_id, stream=manifest.stream,
                                      partition_key=manifest.partition_key)
            try:
                old: LakeManifest | None = self.manifest(shop_id=manifest.shop_id, stream=manifest.stream,
                                                         partition_key=manifest.partition_key)
            except LakeError:
                old = None
            with self._fs.open_output_stream(str(path)) as handle:
                handle.write(manifest.to_json())
            if old is not None and old.select is None and old.path != manifest.path:
                self._delete_quietly(old.path)

    def _delete_quietly(self, path: Path) -> None:
        assert self._fs is not None
        try:
            self._fs.delete_file(str(path))
        except (FileNotFoundError, OSError):
            pass

    def _open_read(self, path: Path) -> IO[bytes]:
        if self._fs is None:
            return open(path, "rb")
        handle: IO[bytes] = self._fs.open_input_file(str(path))
        return handle

    def _read_bytes(self, path: Path) -> builtins.bytes:
        if self._fs is None:
            return path.read_bytes()
        with self._fs.open_input_stream(str(path)) as handle:
            data: builtins.bytes = handle.read()
            return data

    def _size(self, path: Path) -> int:
        if self._fs is None:
            return path.stat().st_size
        info = self._fs.get_file_info(str(path))
        if info.type != pafs.FileType.File or info.size is None:
            raise FileNotFoundError(str(path))
        return int(info.size)

    # -- read -----------------------------------------------------------------------------------

    def manifest(self, *, shop_id: str, stream: str, partition_key: str) -> LakeManifest:
        """The published manifest; raises ``PartitionMissing`` when there is none."""
        path = self.manifest_path(shop_id=shop_id, stream=stream, partition_key=partition_key)
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            raise PartitionMissing(
                f"lake partition shop_id={shop_id} stream={stream} partition={partition_key} is "
                f"missing or incomplete (no manifest at {path})") from None
        return LakeManifest.from_json(data, path.parent)

    def has_partition(self, *, shop_id: str, stream: str, partition_key: str) -> bool:
        """True when a manifest is published and its data file has the recorded size (no hashing)."""
        try:
            manifest = self.manifest(shop_id=shop_id, stream=stream, partition_key=partition_key)
            return self._size(manifest.path) == manifest.bytes
        except (PartitionMissing, FileNotFoundError):
            return False

    def listing(self, *, shop_id: str, stream: str) -> PartitionListing:
        """The names in the shop's ``stream`` directory, read once (empty when it does not exist)."""
        directory = self._directory(shop_id, stream)
        if self._fs is None:
            try:
                names = frozenset(os.listdir(directory))
            except FileNotFoundError:
                names = frozenset()
        else:
            infos = self._fs.get_file_info(pafs.FileSelector(str(directory), allow_not_found=True))
            names = frozenset(Path(info.path).name for info in infos)
        return PartitionListing(self, shop_id=shop_id, stream=stream, names=names)

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
            handle = self._open_read(manifest.path)
        except FileNotFoundError:
            raise PartitionCorrupt(f"manifest names {manifest.path}, which does not exist") from None
        source: IO[bytes] | pa.BufferReader = handle
        try:
            if manifest.bytes <= _READ_WHOLE_BYTES:
                # Read once: the bytes hashed are the bytes parsed (a tick's files are a few KB).
                with handle:
                    content = handle.read(manifest.bytes + 1)
                size, sha256 = len(content), hashlib.sha256(content).hexdigest()
                source = pa.BufferReader(content)
            else:
                sha256, size = _sha256(handle)
                handle.seek(0)
            if (size, sha256) != (manifest.bytes, manifest.sha256):
                raise PartitionCorrupt(
                    f"{manifest.path}: {size} bytes sha256 {sha256[:12]}..., manifest says "
                    f"{manifest.bytes} bytes sha256 {manifest.sha256[:12]}...")
        except BaseException:
            source.close()
            handle.close()
            raise
        if manifest.select is None:
            return _iter_pages(source, manifest.path, shape)
        only = None if manifest.select.pages is None else set(manifest.select.pages)
        return select_pages(_iter_pages(source, manifest.path, shape, only=only), manifest.select)


class PartitionListing:
    """One listing of a shop's stream directory (``PageLake.listing``): ``published`` answers as
    ``has_partition`` does, which it asks only of the keys whose manifest was listed, so scanning a day's
    96 increment partitions costs one directory read instead of 96 manifest opens, most of them failing.
    A partition published after the listing is not seen."""

    def __init__(self, lake: PageLake, *, shop_id: str, stream: str, names: frozenset[str]) -> None:
        self._lake, self.shop_id, self.stream, self._names = lake, shop_id, stream, names

    def published(self, partition_keys: Iterable[str]) -> Iterator[str]:
        """The keys of ``partition_keys``, in order, that ``has_partition`` calls published; each is checked
        when reached (a manifest that does not parse raises there, as ``has_partition`` does)."""
        lake = self._lake
        for key in partition_keys:
            manifest = lake.manifest_path(shop_id=self.shop_id, stream=self.stream, partition_key=key)
            if manifest.name in self._names and lake.has_partition(shop_id=self.shop_id, stream=self.stream,
                                                                   partition_key=key):
                yield key


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


def _iter_pages(handle: IO[bytes] | pa.BufferReader, path: Path, shapes: ListShape | Mapping[str, ListShape], *,
                only: set[int] | None = None) -> Iterator[Page]:
    """The file's pages in written order; ``only``: just the pages at these positions (row groups
    holding none of them are not even read)."""
    with handle, pq.ParquetFile(handle) as parquet:
        position = 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            first, position = position, position + rows
            if only is not None and not any(first <= p < position for p in only):
                continue
            for offset, row in enumerate(arrow_rows(parquet.read_row_group(group))):
                if only is not None and first + offset not in only:
                    continue
                yield _page_of(row, path, shapes)


def _page_of(row: dict[str, Any], path: Path, shapes: ListShape | Mapping[str, ListShape]) -> Page:
    if isinstance(shapes, ListShape):
        shape = shapes
    elif row["method"] in shapes:
        shape = shapes[row["method"]]
    else:
        raise PartitionCorrupt(f"{path}: page {row['page_no']} is from {row['method']}, which this "
                               f"dataset does not read ({sorted(shapes)})")
    try:
        # A detail call refused for its record is kept as a refusal page (sync/refusals.py).
        refused = refusal_items(row["body"]) if row["page_no"] == 0 else None
        items = refused if refused is not None else parse_list_body(
            row["body"], shape, method=row["method"], shop_id=row["shop_id"])[0]
    except TopError as exc:
        raise PartitionCorrupt(
            f"{path}: page {row['page_no']} (request_id {row['request_id']}) does not "
            f"parse as a {shape.list_key} list: {exc}; fetch the partition again "
            "(a run without from_lake)") from None
    return Page(
        shop_id=row["shop_id"], method=row["method"],
        window_start=_utc(row["window_start"]), window_end=_utc(row["window_end"]),
        page_no=row["page_no"], page_size=row["page_size"], request_id=row["request_id"],
        fetched_at=_utc(row["fetched_at"]), body=row["body"], items=items,
        total_results=row["total_results"], has_next=row["has_next"])
