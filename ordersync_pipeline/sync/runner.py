"""Partition runners: the whole of a sync run over many partitions, as plain Python the Dagster assets call.

Each partition goes through two steps with the raw page lake between them:

1. **fetch**: the stream's list pages for the partition's window (plus detail answers for records the list
   call cannot describe) stream into the lake, published atomically: a partition whose pages did not all
   land is never readable.
2. **load**: lake pages -> normalised rows -> monotonic upserts + quarantine, then the windows actually
   fetched (read from the lake manifest) are recorded in ``sync_windows``. Because load reads only the
   lake, any partition can be rebuilt with no API call.

A catch-up (several contiguous closed increment partitions of one shop and stream in one run) is fetched
as ONE API window, up to ``RunnerSettings.coalesce_span`` (the increment API's one-day limit), with the
same overlap and reverse paging; its pages are stored once and each partition's manifest selects its
own records (sync/lake_select.py), so each is then loaded, recorded in ``sync_windows`` with its own
window and reported exactly as if fetched alone, and can be rebuilt from the lake with no call.

``SyncRunner.run`` overlaps the two: partitions are fetched by a small thread pool (the shared rate
budget, not the thread count, bounds calls) and each is loaded as soon as its pages are published, while
later ones are still being fetched. Every partition ends with its own ``PartitionOutcome``; a failure is
retried in place when it can heal by waiting and otherwise reported for that partition alone, so one bad
shop, session or page never stops the others.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait, FIRST_COMPLETED
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ordersync_pipeline.failures import describe, is_transient
from ordersync_pipeline.sync.lake import LakeManifest, PageLake
from ordersync_pipeline.sync.lake_select import Selection
from ordersync_pipeline.sync.refusals import is_record_refusal, refusal_page
from ordersync_pipeline.sync.stream import Batch, Stream
from ordersync_pipeline.sync.windows import (
    HISTORY_HORIZON,
    INCREMENT_MAX_SPAN,
    BeyondHorizon,
    Kind,
    Window,
    clip_to_horizon,
)
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.errors import TopError
from ordersync_pipeline.top.pages import Page
from ordersync_pipeline.warehouse import Warehouse

if TYPE_CHECKING:
    # Annotations only: loader processes import this module and never call the API.
    from ordersync_pipeline.top.client import TopClient

__all__ = ["PartitionTask", "PartitionOutcome", "SyncRunner", "RunnerSettings", "lake_dataset",
           "PAGES_PER_FLUSH", "coalesce", "COALESCED_KINDS", "PageWatch", "Watch"]

log = logging.getLogger("ordersync.sync")

# Flush rows to the warehouse every this many pages: big enough for set-based upserts to pay off,
# small enough to keep memory flat whatever the window size.
PAGES_PER_FLUSH = 10

# Below this many records a run loads in-process: starting loader processes (~1-2 s each, imports
# included) costs more than it saves on small increments.
PARALLEL_LOAD_MIN_RECORDS = 20_000

# Paths whose contiguous partitions may share one fetch: the increment path's partitions are windows on
# the list API's own filter (modified time). A historical day is already a whole created-time day.
COALESCED_KINDS: tuple[Kind, ...] = ("increment",)


def lake_dataset(stream: Stream | str, kind: Kind) -> str:
    """The lake's name for a stream's pages on one path, e.g. ``trades.increment``."""
    name = stream if isinstance(stream, str) else stream.name
    return f"{name}.{kind}"


class PageWatch(Protocol):
    """Sees every page a partition's load reads, in order; ``result()`` goes back with the outcome
    (``PartitionOutcome.watched``). Must be picklable, with a picklable result: loader processes."""

    def see(self, page: Page) -> None: ...

    def result(self) -> Any: ...


Watch = Callable[[], PageWatch]   # a fresh PageWatch for each load attempt


@dataclass(frozen=True)
class PartitionTask:
    """One partition of one stream: what to fetch and where it is accounted."""

    stream: Stream
    kind: Kind
    shop_id: str
    partition_key: str
    window: Window                       # what to fetch (already clipped to what may be fetched now)

    @property
    def dataset(self) -> str:
        return lake_dataset(self.stream, self.kind)

    @property
    def label(self) -> str:
        return f"{self.stream.name} {self.kind} {self.shop_id} {self.partition_key}"


@dataclass
class PartitionOutcome:
    """What happened to one partition: its own figures, never the run's."""

    task: PartitionTask
    pages: int = 0
    records: int = 0                     # records fetched (list items plus detail answers)
    rows: dict[str, int] = field(default_factory=dict)   # rows upserted per table
    quarantined: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)
    api_calls: int = 0
    api_errors: int = 0
    attempts: int = 0
    fetched: Window | None = None        # the window actually fetched (from the lake manifest)
    fetch_seconds: float = 0.0
    load_seconds: float = 0.0
    error: str | None = None
    transient: bool = False
    from_lake: bool = False              # rebuilt from the lake, no API call
    # Partitions fetched in the same API window as this one (itself included); the window's calls
    # and fetch time are spread over them, so sums over partitions stay true.
    fetched_with: int = 1
    # What the stream's PageWatch made of the loaded pages (None: the runner was given no watch for it).
    watched: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float:
        return self.fetch_seconds + self.load_seconds


@dataclass(frozen=True)
class RunnerSettings:
    page_size: int = 100
    # Partitions fetched at once; the shared rate budget still caps calls per minute.
    fetch_concurrency: int = 2
    # Loader processes (PostgreSQL only, and only once a run has enough to load; others load in-process).
    load_workers: int = 2
    # Attempts per partition for failures that can heal by waiting (each API call is already retried
    # by the client); a failure that cannot heal fails its partition at once.
    attempts: int = 3
    retry_delays: tuple[float, ...] = (5.0, 20.0)
    # Contiguous increment partitions of one shop and stream are fetched as one API window of at most
    # this span (zero: every partition alone).
    coalesce_span: timedelta = INCREMENT_MAX_SPAN
    # How far back the historical path's list API sees, from the moment of the call (None: no limit).
    history_horizon: timedelta | None = HISTORY_HORIZON
    # A run that loaded at least this many records refreshes the statistics of the tables it filled.
    analyze_after_records: int = 20_000

    def delay(self, attempt: int) -> float:
        if not self.retry_delays:
            return 0.0
        return self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)]


class _TaskCalls:
    """Forwards call records to the ledger and counts them against the partition the calling thread is
    working on (one client per thread, one partition per thread at a time)."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self._local = threading.local()

    def bind(self, outcome: PartitionOutcome | None) -> None:
        self._local.outcome = outcome

    def record(self, call: Any) -> None:
        outcome: PartitionOutcome | None = getattr(self._local, "outcome", None)
        if outcome is not None:
            outcome.api_calls += 1
            if getattr(call, "outcome", "ok") != "ok":
                outcome.api_errors += 1
        self._ledger.record(call)


ClientFactory = Callable[[Any], "TopClient"]   # recorder -> a new client reporting its calls to it
SessionLookup = Callable[[str], str]         # shop_id -> session key (raises ConfigError when unusable)


class SyncRunner:
    """Fetches and loads partitions of any stream; see the module docstring."""

    def __init__(self, *, lake: PageLake, warehouse: Warehouse, run_id: str | None,
                 settings: RunnerSettings | None = None, clients: ClientFactory | None = None,
                 sessions: SessionLookup | None = None, ledger: Any = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], datetime] = utc_now,
                 watches: Mapping[str, Watch] | None = None) -> None:
        """``clock``: the platform's "now" (the history horizon is counted from it at each call).
        ``watches``: by stream name, what sees each loaded page of that stream's partitions (a follower
        then needs no second read of the partition from the lake)."""
        self.lake, self.warehouse, self.run_id = lake, warehouse, run_id
        self.watches: dict[str, Watch] = dict(watches or {})
        self.settings = settings or RunnerSettings()
        self._clients_factory, self._sessions = clients, sessions
        self._calls = _TaskCalls(ledger) if ledger is not None else None
        self._sleep, self._clock = sleep, clock
        self._local = threading.local()
        self._all_clients: list[TopClient] = []
        self._lock = threading.Lock()

    # -- the run ---------------------------------------------------------------------------------

    def run(self, tasks: Sequence[PartitionTask], *, from_lake: bool = False) -> Iterator[PartitionOutcome]:
        """Fetch (unless ``from_lake``) and load every task; yields each partition's outcome as it ends."""
        if not tasks:
            return
        loader = _Loader(self, total_tasks=len(tasks))
        try:
            if from_lake:
                for task in tasks:
                    outcome = PartitionOutcome(task=task, from_lake=True)
                    if not self.lake.has_partition(shop_id=task.shop_id, stream=task.dataset,
                                                   partition_key=task.partition_key):
                        outcome.error = (f"from_lake: no complete {task.dataset} pages for shop {task.shop_id} "
                                         f"partition {task.partition_key} in the lake; run it once without "
                                         "from_lake")
                        yield outcome
                        continue
                    loader.submit(outcome)
                yield from loader.drain()
                self._analyze_after_bulk(tasks, loader.records_loaded)
                return
            with ThreadPoolExecutor(max_workers=max(1, self.settings.fetch_concurrency),
                                    thread_name_prefix="ordersync-fetch") as pool:
                fetches: dict[Future[None], list[PartitionOutcome]] = {}
                for group in coalesce(tasks, self.settings.coalesce_span):
                    outcomes = [PartitionOutcome(task=task, fetched_with=len(group)) for task in group]
                    fetches[pool.submit(self._fetch, outcomes)] = outcomes
                while fetches or loader.pending:
                    waiting: list[Future[Any]] = [*fetches, *loader.pending]
                    done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                    for future in done:
                        if future in fetches:
                            fetched = fetches.pop(future)
                            future.result()  # _fetch never raises; a bug here should surface
                            for outcome in fetched:
                                if outcome.ok:
                                    loader.submit(outcome, fetched_records=outcome.records)
                                else:
                                    yield outcome
                        else:
                            yield loader.finish(future)
            self._analyze_after_bulk(tasks, loader.records_loaded)
        finally:
            loader.close()
            self._close_clients()

    def _analyze_after_bulk(self, tasks: Sequence[PartitionTask], records: int) -> None:
        """After a bulk load, refresh the planner's statistics of the tables it filled.

        A first history load grows the tables from nothing to millions of rows in minutes, before
        autovacuum's first analyse: until then PostgreSQL plans the reconciliation's and the
        forecast's joins as if the tables were empty (nested loops over the whole day's lines). Only
        an optimisation, so a failure is logged, never raised."""
        if records < self.settings.analyze_after_records:
            return
        tables = sorted({table for task in tasks for table in task.stream.tables})
        try:
            self.warehouse.analyze(tables)
        except Exception as exc:  # noqa: BLE001 - statistics are an optimisation
            log.warning("could not refresh the statistics of %s: %s", ", ".join(tables), describe(exc))

    # -- fetch -----------------------------------------------------------------------------------

    def _client(self) -> TopClient:
        client: TopClient | None = getattr(self._local, "client", None)
        if client is None:
            if self._clients_factory is None:
                raise RuntimeError("this runner was built without a client factory (from-lake only)")
            client = self._local.client = self._clients_factory(self._calls)
            with self._lock:
                self._all_clients.append(client)
        return client

    def _close_clients(self) -> None:
        with self._lock:
            clients, self._all_clients = self._all_clients, []
        for client in clients:
            client.close()

    def _fetch(self, outcomes: list[PartitionOutcome]) -> None:
        """Fetch the partitions of ``outcomes`` (one, or several coalesced into one window) into the lake;
        a failure is recorded on each partition it concerns (never raised).

        A coalesced window that keeps failing for a reason that may heal (a truncated page, a window
        still settling) is fetched again partition by partition, so the failure stays with the partition
        it belongs to; one that cannot heal (a refused session) fails them all at once, no call wasted."""
        self._fetch_together(outcomes)
        lead = outcomes[0]
        if len(outcomes) == 1 or lead.ok or not lead.transient:
            return
        log.warning("%s (+%d coalesced): fetching its partitions one by one", lead.task.label, len(outcomes) - 1)
        for outcome in outcomes:
            shared_seconds = outcome.fetch_seconds
            outcome.error, outcome.transient, outcome.fetched_with = None, False, 1
            self._fetch_together([outcome])
            outcome.fetch_seconds += shared_seconds

    def _fetch_together(self, outcomes: list[PartitionOutcome]) -> None:
        lead = outcomes[0]
        tasks = [outcome.task for outcome in outcomes]
        started = time.perf_counter()
        calls_before = [(o.api_calls, o.api_errors) for o in outcomes]
        if self._calls is not None:
            self._calls.bind(lead)
        try:
            for attempt in range(1, self.settings.attempts + 1):
                for outcome in outcomes:
                    outcome.attempts = attempt
                try:
                    manifests = self._fetch_once(tasks)
                except Exception as exc:  # noqa: BLE001 - every failure is these partitions' alone
                    transient = is_transient(exc)
                    label = lead.task.label if len(tasks) == 1 else f"{lead.task.label} (+{len(tasks) - 1} coalesced)"
                    if transient and attempt < self.settings.attempts:
                        delay = self.settings.delay(attempt)
                        log.warning("%s: attempt %d failed (%s); retrying in %.0fs", label, attempt,
                                    describe(exc), delay)
                        self._sleep(delay)
                        continue
                    for outcome in outcomes:
                        outcome.error, outcome.transient = describe(exc), transient
                    log.warning("%s: failed: %s", label, lead.error)
                    return
                for outcome, manifest in zip(outcomes, manifests, strict=True):
                    outcome.pages, outcome.records = manifest.pages, manifest.items
                    outcome.fetched = manifest_window(manifest)
                return
        finally:
            if self._calls is not None:
                self._calls.bind(None)
            # The calls this fetch made were counted on the lead; spread them over the partitions.
            calls = lead.api_calls - calls_before[0][0]
            errors = lead.api_errors - calls_before[0][1]
            lead.api_calls, lead.api_errors = calls_before[0]
            _spread(outcomes, calls=calls, errors=errors, seconds=time.perf_counter() - started)

    def _fetch_once(self, tasks: Sequence[PartitionTask]) -> list[LakeManifest]:
        if self._sessions is None:
            raise RuntimeError("this runner was built without session lookup (from-lake only)")
        task = tasks[0]
        session = self._sessions(task.shop_id)
        client = self._client()
        listing = task.stream.lists[task.kind]
        window = Window(min(t.window.start for t in tasks), max(t.window.end for t in tasks))
        if task.kind == "historical" and self.settings.history_horizon is not None:
            # Clipped now, at call time: a day that was inside the horizon when the run was planned
            # may have slid out of it since. The pages (and so sync_windows) carry the clipped start.
            clipped = clip_to_horizon(window, now=self._clock(), horizon=self.settings.history_horizon)
            if clipped is None:
                raise BeyondHorizon(
                    f"{task.label}: {task.stream.lists[task.kind].method} lists only the last "
                    f"{self.settings.history_horizon.days} days; this window ends before that")
            window = clipped
        pages: Iterable[Page] = listing.pages(client, shop_id=task.shop_id, session=session,
                                              window=window, page_size=self.settings.page_size)
        if task.stream.detail is not None:
            pages = _with_details(pages, task, client, session)
        if len(tasks) == 1:
            return [self.lake.write_partition(shop_id=task.shop_id, stream=task.dataset,
                                              partition_key=task.partition_key, pages=pages)]
        selections = [Selection(partition_key=t.partition_key, start=t.window.start, end=t.window.end,
                                time_field=t.stream.time_field, record_key=t.stream.record_key) for t in tasks]
        return self.lake.write_shared(shop_id=task.shop_id, stream=task.dataset, pages=pages,
                                      selections=selections)


def _spread(outcomes: Sequence[PartitionOutcome], *, calls: int, errors: int, seconds: float) -> None:
    """A shared fetch's calls, errors and time added to its partitions' in even shares (sums stay true)."""
    n = len(outcomes)
    for i, outcome in enumerate(outcomes):
        outcome.api_calls += calls // n + (1 if i < calls % n else 0)
        outcome.api_errors += errors // n + (1 if i < errors % n else 0)
        outcome.fetch_seconds = seconds / n


def coalesce(tasks: Sequence[PartitionTask], max_span: timedelta) -> list[list[PartitionTask]]:
    """``tasks`` in groups fetched as one API window: contiguous (or overlapping) windows of one shop,
    stream and path in ``COALESCED_KINDS``, the whole group's window at most ``max_span``; any other task
    is a group of its own. Groups come in the order of their first task."""
    chains: dict[tuple[str, str, str], list[list[PartitionTask]]] = {}
    if max_span > timedelta(0):
        by_key: dict[tuple[str, str, str], list[PartitionTask]] = {}
        for task in tasks:
            if task.kind in COALESCED_KINDS:
                by_key.setdefault((task.stream.name, task.kind, task.shop_id), []).append(task)
        for key, members in by_key.items():
            groups: list[list[PartitionTask]] = []
            for task in sorted(members, key=lambda t: (t.window.start, t.window.end)):
                if groups:
                    group = groups[-1]
                    end = max(t.window.end for t in group)
                    if task.window.start <= end and max(end, task.window.end) - group[0].window.start <= max_span:
                        group.append(task)
                        continue
                groups.append([task])
            chains[key] = groups
    first_of: dict[int, list[PartitionTask]] = {}
    for groups in chains.values():
        for group in groups:
            first_of[id(group[0])] = group
    grouped = {id(t) for groups in chains.values() for group in groups for t in group}
    ordered: list[list[PartitionTask]] = []
    for task in tasks:
        if id(task) in first_of:
            ordered.append(first_of[id(task)])
        elif id(task) not in grouped:
            ordered.append([task])
    return ordered


def _with_details(pages: Iterable[Page], task: PartitionTask, client: TopClient,
                  session: str) -> Iterator[Page]:
    """The list pages, each followed by one detail page per record the list call could not describe.

    A detail call the platform refuses for that record alone (sync/refusals.py) becomes a refusal page,
    which the load quarantines; any other failure propagates and fails (or retries) the partition."""
    detail = task.stream.detail
    assert detail is not None
    for page in pages:
        yield page
        for record in page.items:
            # A record that is not an object cannot be looked up; the normaliser quarantines it.
            if isinstance(record, dict) and detail.incomplete(record):
                window = Window(page.window_start, page.window_end)
                try:
                    yield detail.fetch(client, shop_id=task.shop_id, session=session, record=record,
                                       window=window)
                except TopError as exc:
                    if not is_record_refusal(exc, key_param=task.stream.record_key):
                        raise
                    log.warning("%s: %s %s refused, quarantined: %s", task.label, task.stream.record_key,
                                record.get(task.stream.record_key), describe(exc))
                    yield refusal_page(exc, record=record, shop_id=task.shop_id, method=detail.method,
                                       window_start=window.start, window_end=window.end)


def manifest_window(manifest: LakeManifest) -> Window:
    """The window a published partition covers: its pages' windows are contiguous pieces of it."""
    starts = [start for start, _ in manifest.windows]
    ends = [end for _, end in manifest.windows]
    return Window(min(starts), max(ends))


# -- load -----------------------------------------------------------------------------------------

@dataclass
class LoadFigures:
    """What loading one partition did (picklable: comes back from loader processes)."""

    pages: int = 0
    records: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)
    window: Window | None = None
    seconds: float = 0.0
    watched: Any = None


def load_partition(*, lake: PageLake, warehouse: Warehouse, stream: Stream, kind: Kind, shop_id: str,
                   partition_key: str, run_id: str | None, watch: Watch | None = None) -> LoadFigures:
    """Lake pages -> warehouse rows; records the fetched window only after every page committed.
    ``watch``: makes a ``PageWatch`` shown every page read (its result in ``LoadFigures.watched``)."""
    started = time.perf_counter()
    watching = watch() if watch is not None else None
    dataset = lake_dataset(stream, kind)
    manifest = lake.manifest(shop_id=shop_id, stream=dataset, partition_key=partition_key)
    figures = LoadFigures(window=manifest_window(manifest))
    source = stream.lists[kind].source
    pending = Batch()
    pending_pages = 0
    for page in lake.read_partition(shop_id=shop_id, stream=dataset, partition_key=partition_key,
                                    shape=stream.shape):
        if watching is not None:
            watching.see(page)
        batch = stream.normalize(shop_id, page.items, synced_at=utc_now(), fetched_at=page.fetched_at,
                                 source=source)
        pending.extend(batch)
        pending_pages += 1
        figures.pages += 1
        figures.records += len(page.items)
        if pending_pages >= PAGES_PER_FLUSH:
            _flush(pending, warehouse=warehouse, stream=stream, run_id=run_id, figures=figures)
            pending, pending_pages = Batch(), 0
    assert figures.window is not None
    complete: dict[str, Any] = {
        "shop_id": shop_id, "stream": stream.name, "kind": kind, "window_start": figures.window.start,
        "window_end": figures.window.end, "partition_key": partition_key, "pages": figures.pages,
        "records": figures.records, "run_id": run_id}
    if stream.after_load is None and not pending.quarantine and any(pending.rows.values()):
        # The last rows and the window's record in one transaction (one commit, not two; a tick
        # commits ~400 windows). Quarantine rows and an after_load hook write in transactions of their
        # own, which must come first: then the window is recorded on its own, after them.
        _flush(pending, warehouse=warehouse, stream=stream, run_id=run_id, figures=figures,
               complete_window=complete)
    else:
        _flush(pending, warehouse=warehouse, stream=stream, run_id=run_id, figures=figures)
        warehouse.mark_window_complete(**complete)
    figures.watched = watching.result() if watching is not None else None
    figures.seconds = time.perf_counter() - started
    return figures


def _flush(batch: Batch, *, warehouse: Warehouse, stream: Stream, run_id: str | None,
           figures: LoadFigures, complete_window: Mapping[str, Any] | None = None) -> None:
    """One transaction for the batch's rows (a trade and its lines together), then its quarantine rows.

    Records that failed validation are in ``batch.quarantine``; records the database itself refused are
    split out and quarantined by the warehouse (counted here, reasons in the quarantine table)."""
    loads = [(table, rows) for table, rows in batch.rows.items() if rows]
    if loads:
        for result in warehouse.upsert_many(loads, run_id=run_id, complete_window=complete_window):
            figures.rows[result.table] = figures.rows.get(result.table, 0) + result.unique - result.quarantined
            figures.quarantined += result.quarantined if result.table == stream.tables[0] else 0
        if stream.after_load is not None:
            stream.after_load(warehouse, batch)
    if batch.quarantine:
        for row in batch.quarantine:
            row["run_id"] = run_id
        warehouse.add_quarantine(batch.quarantine)
        figures.quarantined += len(batch.quarantine)
        figures.quarantine_reasons.extend(str(r["reason"]) for r in batch.quarantine[:20])


class _Loader:
    """Loads fetched partitions while others are still fetching: one in-process loader thread, or loader
    processes on PostgreSQL once a run has enough to load for them to pay off.

    Loading is CPU-bound Python (parse, normalise, encode COPY) while the database merges in its own
    process, so on PostgreSQL two loader processes keep both cores busy. Overlapping windows hold the same
    records; the monotonic upsert makes any interleaving converge and rows are written in key order so
    concurrent transactions queue instead of deadlocking. SQLite allows one writer and MariaDB's gap locks
    deadlock under concurrent upserts, so they load in one thread.
    """

    def __init__(self, runner: SyncRunner, *, total_tasks: int) -> None:
        self._runner = runner
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ordersync-load")
        self._processes: ProcessPoolExecutor | None = None
        self._parallel_ok = (runner.settings.load_workers > 1 and total_tasks > 1
                             and runner.warehouse.dialect_name == "postgresql")
        self._records_seen = 0
        self.records_loaded = 0          # records of the partitions loaded without error
        self.pending: dict[Future[LoadFigures], PartitionOutcome] = {}

    def submit(self, outcome: PartitionOutcome, *, fetched_records: int | None = None) -> None:
        task, runner = outcome.task, self._runner
        if fetched_records is None:
            try:
                fetched_records = runner.lake.manifest(shop_id=task.shop_id, stream=task.dataset,
                                                       partition_key=task.partition_key).items
            except Exception:  # noqa: BLE001 - load_partition reports a missing partition itself
                fetched_records = 0
        self._records_seen += fetched_records
        if self._parallel_ok and self._records_seen >= PARALLEL_LOAD_MIN_RECORDS and self._processes is None:
            # spawn, not fork: the parent holds live database connections and threads. A fork server
            # preloading this module was measured (200k trades): no lower PSS with two loaders, since
            # the server keeps its copy of every page the loaders write to, and it outlives the load.
            self._processes = ProcessPoolExecutor(max_workers=runner.settings.load_workers,
                                                  mp_context=multiprocessing.get_context("spawn"))
        watch = runner.watches.get(task.stream.name)
        if self._processes is not None:
            url = runner.warehouse.engine.url.render_as_string(hide_password=False)
            future = self._processes.submit(_load_in_worker, task.stream.name, task.kind, task.shop_id,
                                            task.partition_key, runner.lake.url, url, runner.run_id,
                                            runner.warehouse.store_receiver_pii, watch)
        else:
            future = self._thread.submit(self._load_here, task, watch)
        self.pending[future] = outcome

    def _load_here(self, task: PartitionTask, watch: Watch | None) -> LoadFigures:
        runner = self._runner
        attempts = runner.settings.attempts
        for attempt in range(1, attempts + 1):
            try:
                return load_partition(lake=runner.lake, warehouse=runner.warehouse, stream=task.stream,
                                      kind=task.kind, shop_id=task.shop_id,
                                      partition_key=task.partition_key, run_id=runner.run_id, watch=watch)
            except Exception as exc:
                if attempt < attempts and is_transient(exc):
                    delay = runner.settings.delay(attempt)
                    log.warning("%s: load attempt %d failed (%s); retrying in %.0fs", task.label,
                                attempt, describe(exc), delay)
                    runner._sleep(delay)
                    continue
                raise
        raise AssertionError("unreachable")

    def finish(self, future: Future[LoadFigures]) -> PartitionOutcome:
        outcome = self.pending.pop(future)
        try:
            figures = future.result()
        except Exception as exc:  # noqa: BLE001 - this partition's failure alone
            outcome.error, outcome.transient = describe(exc), is_transient(exc)
            log.warning("%s: load failed: %s", outcome.task.label, outcome.error)
            return outcome
        self.records_loaded += figures.records
        outcome.rows = figures.rows
        outcome.quarantined = figures.quarantined
        outcome.quarantine_reasons = figures.quarantine_reasons
        outcome.load_seconds = figures.seconds
        outcome.fetched = outcome.fetched or figures.window
        outcome.watched = figures.watched
        if not outcome.pages:  # a from-lake rebuild learns its figures from the load
            outcome.pages, outcome.records = figures.pages, figures.records
        return outcome

    def drain(self) -> Iterator[PartitionOutcome]:
        while self.pending:
            done, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
            for future in done:
                yield self.finish(future)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True)


_WORKER_WAREHOUSES: dict[str, Warehouse] = {}


def _load_in_worker(stream_name: str, kind: Kind, shop_id: str, partition_key: str, lake_root: str,
                    url: str, run_id: str | None, store_receiver_pii: bool,
                    watch: Watch | None = None) -> LoadFigures:
    from ordersync_pipeline.sync.streams import stream

    warehouse = _WORKER_WAREHOUSES.get(url)
    if warehouse is None:
        warehouse = _WORKER_WAREHOUSES[url] = Warehouse(url, store_receiver_pii=store_receiver_pii)
    return load_partition(lake=PageLake(lake_root), warehouse=warehouse, stream=stream(stream_name),
                          kind=kind, shop_id=shop_id, partition_key=partition_key, run_id=run_id,
                          watch=watch)
