"""The Dagster instance the terminal drivers use, one sync at a time per home, and runs left by a killed process.

* ``ensure_dagster_home``: ``DAGSTER_HOME`` if set, else ``ORDERSYNC_HOME/dagster`` with the embedded
  default ``dagster.yaml`` (SQLite storage, no telemetry, run monitoring on, INFO-level run logs in the
  terminal, freshness policies evaluated).
* ``sync_lock``: an exclusive lock on ``ORDERSYNC_HOME/sync.lock``. Two ``ordersync sync`` on one home
  would fetch every window twice and each summary would count the other's calls; the second one waits
  (``--wait``) or says who holds the lock. The kernel drops the lock when its holder dies, even by kill -9.
* ``fail_dead_runs``: a run started by ``ordersync sync`` carries its process id and host; if that process
  is gone (kill -9, power loss) while Dagster still says STARTED, the run is marked failed with a message
  saying so, so the UI never shows it running forever. Runs launched by the daemon are covered by Dagster's
  run monitoring, which the default dagster.yaml turns on.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ordersync_pipeline.processes import pid_exists

__all__ = ["ensure_dagster_home", "default_dagster_yaml", "sync_lock", "SyncBusy", "fail_dead_runs", "run_tags",
           "DAGSTER_YAML", "PID_TAG", "HOST_TAG", "STARTED_BY_TAG"]

PID_TAG = "ordersync/pid"
HOST_TAG = "ordersync/host"
STARTED_BY_TAG = "ordersync/started_by"

_WRITTEN_BY_US = "# Written by ordersync: the embedded default instance"
DAGSTER_YAML = """\
# Written by ordersync: the embedded default instance (SQLite storage under this folder).
# For production point storage at PostgreSQL instead; see the README.
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
# Runs print INFO and above to the terminal (Dagster's default is every DEBUG event of the run); the
# event log in the UI keeps every event either way.
python_logs:
  python_log_level: INFO
# Evaluates the assets' freshness expectations (shown in the catalog and the asset pages).
freshness:
  enabled: true
# Marks runs whose process died (kill -9, OOM) as failed instead of leaving them STARTED.
run_monitoring:
  enabled: true
  poll_interval_seconds: 60
"""
# Appended with this home's absolute path: Dagster's SQLite event log, one connection per shard instead of
# an engine and a connection per event (app/dagster_storage.py); same files as Dagster's default.
EVENT_LOG_YAML = """\
event_log_storage:
  module: ordersync_pipeline.app.dagster_storage
  class: PooledSqliteEventLogStorage
  config:
    base_dir: {base_dir}
"""


def default_dagster_yaml(dagster_home: Path) -> str:
    """The dagster.yaml ordersync writes into ``dagster_home``: ``DAGSTER_YAML`` and the event log there."""
    base_dir = json.dumps(str((dagster_home / "history" / "runs").resolve()))  # a quoted YAML scalar
    return DAGSTER_YAML + EVENT_LOG_YAML.format(base_dir=base_dir)


def ensure_dagster_home(home: Path) -> Path:
    """``DAGSTER_HOME`` if set, else ``home/dagster`` with a default dagster.yaml; exported either way."""
    raw = os.environ.get("DAGSTER_HOME")
    dagster_home = Path(raw) if raw else home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    yaml_path = dagster_home / "dagster.yaml"
    wanted = default_dagster_yaml(dagster_home)
    # A file ordersync wrote is brought up to date; one a person wrote is theirs.
    if not yaml_path.exists() or (_WRITTEN_BY_US in (old := yaml_path.read_text(encoding="utf-8"))
                                  and old != wanted):
        yaml_path.write_text(wanted, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(dagster_home.resolve())
    return dagster_home


def run_tags(started_by: str) -> dict[str, str]:
    """Tags for a run executed in this process: who started it, and which process runs it."""
    return {STARTED_BY_TAG: started_by, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


class SyncBusy(RuntimeError):
    """Another sync holds the home's lock."""


@contextmanager
def sync_lock(home: Path, *, wait_seconds: float = 0.0, poll: float = 0.5) -> Iterator[None]:
    """Hold ``home/sync.lock`` for the block; ``SyncBusy`` if another process keeps it past ``wait_seconds``."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "sync.lock"
    handle: IO[str] = open(path, "a+", encoding="utf-8")
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise SyncBusy(f"another ordersync sync is running on {home} ({holder}); wait for it "
                                   "to finish, or pass --wait SECONDS") from None
                time.sleep(poll)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock



def fail_dead_runs(instance: Any) -> list[str]:
    """Mark unfinished runs (created, starting or started) of this host whose process is gone as failed;
    returns their run ids."""
    import dagster as dg

    host = socket.gethostname()
    marked: list[str] = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                             dg.DagsterRunStatus.STARTING,
                                                             dg.DagsterRunStatus.NOT_STARTED]))
    for run in runs:
        pid_text, run_host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if not pid_text or run_host != host or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or pid_exists(pid):
            continue
        instance.report_run_failed(run, message=(
            f"the process running this run (pid {pid} on {host}) is gone (killed or crashed); its "
            "incomplete partitions were not marked complete and the next sync retries them"))
        marked.append(run.run_id)
    return marked
