"""PageLake after kill -9 and on shared machines: temps of dead writers are swept (live ones never),
a killed write leaves the old version or nothing, and lake files are private (0o600 / 0o700)."""

from __future__ import annotations

import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ordersync_pipeline.sync.lake import STALE_TEMP_AGE, PageLake, PartitionMissing
from ordersync_pipeline.sync.lake_files import temp_name
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.top.pages import TRADES, Page, parse_list_body

SAMPLE = Path(__file__).parent / "data" / "top-samples" / "trades_sold_get_success.json"
SOLD = "taobao.trades.sold.get"
KEY = "2026-11-26-10:15"
START = datetime(2026, 11, 26, 10, 10, tzinfo=SHANGHAI)
END = datetime(2026, 11, 26, 10, 30, tzinfo=SHANGHAI)
OLD = time.time() - STALE_TEMP_AGE.total_seconds() - 3600


def page(page_no: int = 1) -> Page:
    body = SAMPLE.read_bytes()
    items, total, has_next = parse_list_body(body, TRADES, method=SOLD)
    return Page(shop_id="shop-1", method=SOLD, window_start=START, window_end=END, page_no=page_no,
                page_size=100, request_id=f"r{page_no}", fetched_at=datetime(2026, 11, 26, tzinfo=timezone.utc),
                body=body, items=items, total_results=total, has_next=has_next)


def write(lake: PageLake, pages: list[Page]) -> None:
    lake.write_partition(shop_id="shop-1", stream="increment", partition_key=KEY, pages=pages)


def read(lake: PageLake) -> list[Page]:
    return list(lake.read_partition(shop_id="shop-1", stream="increment", partition_key=KEY, shape=TRADES))


def directory(lake: PageLake) -> Path:
    return lake.partition_path(shop_id="shop-1", stream="increment", partition_key=KEY).parent


def temps(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.name.endswith(".tmp")}


def process_start(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def writer_tag(name: str, pid: int, start: str) -> str:
    """``temp_name``'s output for another writer: this host, the given pid and start time."""
    own = temp_name(name)
    head, _, rest = own.partition(f".{os.getpid()}-{process_start(os.getpid())}.")
    return f"{head}.{pid}-{start}.{rest}"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


def test_temps_of_dead_writers_go_and_live_writers_temps_stay(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    lake = PageLake(tmp_path)
    write(lake, [page()])
    where = directory(lake)
    target = "partition=2026-11-26-10:15.parquet"
    dead = writer_tag(target, dead_pid(), "1234")
    live = writer_tag(target, sleeper.pid, process_start(sleeper.pid))
    reused = writer_tag(target, sleeper.pid, "1")             # the pid now names another process
    mine = temp_name(target)                                   # this process: another thread's write
    remote_fresh = f".{target}.otherhost.{sleeper.pid}-1.{'a' * 32}.tmp"
    remote_old = f".{target}.otherhost.{dead_pid()}-1.{'b' * 32}.tmp"
    legacy_old = f".{target}.{'c' * 32}.tmp"                  # older versions' untagged names
    legacy_fresh = f".{target}.{'d' * 32}.tmp"
    for name in (dead, live, reused, mine, remote_fresh, remote_old, legacy_old, legacy_fresh):
        (where / name).write_bytes(b"partial")
    for name in (mine, live, remote_old, legacy_old):
        os.utime(where / name, (OLD, OLD))  # age never removes a live writer's temp
    published = sorted(p.name for p in where.iterdir() if not p.name.endswith(".tmp"))

    removed = PageLake(tmp_path).sweep_temps()

    assert sorted(p.name for p in removed) == sorted([dead, reused, remote_old, legacy_old])
    assert temps(where) == {live, mine, remote_fresh, legacy_fresh}
    assert sorted(p.name for p in where.iterdir() if not p.name.endswith(".tmp")) == published
    assert read(lake) == [page()]


def test_the_first_write_into_a_directory_sweeps_it(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    write(lake, [page()])
    stale = directory(lake) / writer_tag("partition=other.parquet", dead_pid(), "1")
    stale.write_bytes(b"partial")
    lake.write_partition(shop_id="shop-1", stream="increment", partition_key="other", pages=[page()])
    assert stale.exists()  # a lake object sweeps a directory once, at its first write there
    PageLake(tmp_path).write_partition(shop_id="shop-1", stream="increment", partition_key="other",
                                       pages=[page()])
    assert temps(directory(lake)) == set()


_KILLED_WRITER = """
import dataclasses, pickle, sys, time
from pathlib import Path
from ordersync_pipeline.sync.lake import PageLake

template = pickle.loads(Path(sys.argv[2]).read_bytes())

def pages():
    for n in range(1, 121):  # more than two row groups reach the temp file
        yield dataclasses.replace(template, page_no=n)
    print("ready", flush=True)
    time.sleep(120)          # a slow API call: killed here

PageLake(Path(sys.argv[1])).write_partition(shop_id="shop-1", stream="increment",
                                            partition_key="2026-11-26-10:15", pages=pages())
"""


@pytest.mark.parametrize("published_before", [False, True])
def test_kill_9_mid_write_leaves_the_old_version_or_nothing_and_the_next_write_cleans_up(
        tmp_path: Path, published_before: bool) -> None:
    lake = PageLake(tmp_path)
    old = [page(1), page(2)]
    if published_before:
        write(lake, old)
    template = tmp_path / "page.pickle"
    template.write_bytes(pickle.dumps(page()))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(template)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    where = directory(lake)
    (left,) = temps(where)
    assert (where / left).stat().st_size > 0  # row groups of the killed write were on disk

    fresh = PageLake(tmp_path)
    if published_before:
        assert read(fresh) == old
    else:
        assert not fresh.has_partition(shop_id="shop-1", stream="increment", partition_key=KEY)
        with pytest.raises(PartitionMissing):
            read(fresh)
    assert temps(where) == {left}  # reading never deletes

    write(fresh, [page(3)])
    assert temps(where) == set()
    assert [p.page_no for p in read(fresh)] == [3]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_lake_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "home" / "lake"
    previous = os.umask(0)  # without explicit modes this would give 0o666 files and 0o777 dirs
    try:
        lake = PageLake(root)
        write(lake, [page()])
    finally:
        os.umask(previous)
    data = lake.partition_path(shop_id="shop-1", stream="increment", partition_key=KEY)
    manifest = lake.manifest_path(shop_id="shop-1", stream="increment", partition_key=KEY)
    assert (_mode(data), _mode(manifest)) == (0o600, 0o600)
    for level in (root, root / "pages", root / "pages/stream=increment", data.parent):
        assert _mode(level) == 0o700, level


def test_directories_left_open_by_older_versions_are_tightened(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    where = directory(lake)
    where.mkdir(parents=True)
    for level in (tmp_path, tmp_path / "pages", where.parent, where):
        level.chmod(0o755)
    write(lake, [page()])
    assert [_mode(level) for level in (tmp_path / "pages", where.parent, where)] == [0o700] * 3
    assert _mode(tmp_path) == 0o755  # an existing root is the operator's choice
