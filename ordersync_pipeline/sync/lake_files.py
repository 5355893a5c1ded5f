"""Files of the page lake that survive ``kill -9`` and stay private.

- ``create_private``: new files are created ``0o600`` (lake files hold buyer identifiers).
- ``temp_name``: a hidden temp name beside the final one, tagged with the writer's host (and pid
  namespace), pid and process start time (Linux ``/proc``), so a later sweep can tell whether its
  writer still runs.
- ``sweep_directory``: removes temps whose writer is gone from this host; temps of other hosts
  (a shared file system) or without a writer tag only once untouched for ``STALE_TEMP_AGE``. A temp of
  a live writer (another process, or another thread of this one) is never removed.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import IO

from ordersync_pipeline.processes import pid_exists

__all__ = ["FILE_MODE", "DIR_MODE", "STALE_TEMP_AGE", "create_private", "temp_name", "sweep_directory"]

FILE_MODE = 0o600
DIR_MODE = 0o700
# Temps of other hosts or unknown writers go only when untouched this long; a live writer rewrites
# its data temp every row group, within minutes even under a tight API quota.
STALE_TEMP_AGE = timedelta(days=1)


def _host_tag() -> str:
    """Host name plus pid namespace: containers sharing a lake volume under one host name still
    get distinct tags, since a pid means nothing outside its own namespace."""
    host = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:64] or "host"
    try:
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))  # "pid:[4026531836]"
    except OSError:
        namespace = ""
    return f"{host}_{namespace}" if namespace else host


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from Linux ``/proc``: with the pid it names
    one process even after the pid is reused (a restarted container often gets the same pid).
    ``""`` where there is no ``/proc``; None when no such live process (absent or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else ""
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, starttime 22
    return None if fields[0] == "Z" else fields[19]



_HOST = _host_tag()
# The temp name's writer tag: host (and pid namespace), pid and the process's start time.
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-(?P<start>\d*)\.[0-9a-f]{32}\.tmp$")


# This process's writer tag, by pid: a forked child has its own pid, so it never uses its parent's.
_WRITER_TAGS: dict[int, str] = {}


def temp_name(final_name: str) -> str:
    pid = os.getpid()
    tag = _WRITER_TAGS.get(pid)
    if tag is None:
        # A process's start time never changes: read /proc once per process, not per temp file.
        tag = _WRITER_TAGS[pid] = f"{_HOST}.{pid}-{_process_start(pid) or ''}"
    return f".{final_name}.{tag}.{uuid.uuid4().hex}.tmp"


def _writer_alive(pid: int, start: str) -> bool:
    """Whether the writer ``pid`` (started at ``start``, "" when unknown) still runs on this host."""
    now_start = _process_start(pid)
    if now_start is None:
        return False
    if now_start == "" or start == "":  # no /proc here or in the name: the pid is all we have
        return pid_exists(pid)
    return now_start == start


def _temp_is_stale(path: Path, now: float) -> bool:
    match = _TEMP_NAME.match(path.name)
    if match is not None and match["host"] == _HOST:
        return not _writer_alive(int(match["pid"]), match["start"])
    # Another host (a shared file system) or a name without a writer tag: only age can tell.
    try:
        return now - path.stat().st_mtime > STALE_TEMP_AGE.total_seconds()
    except FileNotFoundError:
        return False


def sweep_directory(directory: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the stale temps among ``names`` in ``directory`` (default: all its entries); returns
    what was removed."""
    now = time.time()
    removed = []
    try:
        candidates = list(os.listdir(directory) if names is None else names)
    except FileNotFoundError:
        return []
    for name in candidates:
        path = directory / name
        if name.startswith(".") and name.endswith(".tmp") and _temp_is_stale(path, now):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def create_private(path: Path) -> IO[bytes]:
    """A new file readable by the owner only (lake files hold buyer identifiers)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    return os.fdopen(fd, "wb")
