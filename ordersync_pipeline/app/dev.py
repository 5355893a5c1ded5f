"""``ordersync dev``: the Dagster UI and daemon on this project's instance, as code location ``ordersync``.

After ``ordersync demo`` it also brings the demo's simulator back on its port, so the schedule's runs reach
a gateway. Ports are checked before anything starts, and the UI's address is printed only once the UI
answers: a busy port is one line saying what is busy and what to do, never a UI claimed but not served.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ordersync_pipeline.app.demo import demo_simulator_for, start_simulator_process, stop_process
from ordersync_pipeline.app.instance import ensure_dagster_home, fail_dead_runs
from ordersync_pipeline.app.sync import Echo
from ordersync_pipeline.config import ENV_CONFIG, ENV_HOME, ordersync_home
from ordersync_pipeline.settings import resolve_config_path

__all__ = ["run_dev", "PortBusy", "WORKSPACE_YAML", "LOCATION_NAME"]

LOCATION_NAME = "ordersync"
WORKSPACE_YAML = f"""\
# Written by `ordersync dev`: the code location the UI and the daemon load.
load_from:
  - python_module:
      module_name: ordersync_pipeline.definitions
      location_name: {LOCATION_NAME}
"""


class PortBusy(RuntimeError):
    """A port ``ordersync dev`` needs is taken; the message says which and what to do."""


def _check_free(host: str, port: int, what: str, hint: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortBusy(f"port {port} on {host} ({what}) is already in use, probably by another "
                               f"`ordersync dev` or Dagster UI; {hint}") from None
            raise


def _wait_until_serving(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


# `python -m dagster dev` warns on every start that `dg dev` supersedes it: advice for Dagster projects
# scaffolded by `dg`, meaningless to someone who typed `ordersync dev`. Filtered by its message only.
_QUIET_WARNINGS = "ignore:Function `dev_command` is superseded"


def dev_environment(config_path: Path | None) -> dict[str, str]:
    """Environment for the UI's processes: this project's instance, configuration and data."""
    home = ordersync_home()
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), _QUIET_WARNINGS]))
    env[ENV_HOME] = str(home)
    env["DAGSTER_HOME"] = str(ensure_dagster_home(home).resolve())
    env[ENV_CONFIG] = str(resolve_config_path(config_path).resolve())
    return env


def run_dev(*, config_path: Path | None, host: str, port: int, echo: Echo = print,
            start_timeout: float = 120.0, log_level: str = "warning") -> int:
    """Run ``dagster dev`` (UI + daemon) until interrupted; returns its exit code. ``log_level`` is that of
    the UI's and daemon's own lines (at ``info`` the daemon reports every sensor evaluation, twice a
    minute each); runs print INFO and above (the instance's ``python_logs``)."""
    import dagster as dg

    _check_free(host, port, "the Dagster UI", f"stop it, or choose another port with --port {port + 1}")
    env = dev_environment(config_path)
    demo = demo_simulator_for(Path(env[ENV_CONFIG]))
    sim_port = None
    if demo is not None:
        sim_port = int(str(demo["gateway"]).rsplit(":", 1)[1].split("/", 1)[0])
        _check_free("127.0.0.1", sim_port, "the demo's TOP simulator",
                    "another `ordersync dev` is probably serving the demo already; stop it first")
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:
        for run_id in fail_dead_runs(instance):
            echo(f"marked run {run_id} failed: the process that ran it is gone")
    workspace = Path(env["DAGSTER_HOME"]) / "workspace.yaml"
    workspace.write_text(WORKSPACE_YAML, encoding="utf-8")
    simulator = None
    if demo is not None and sim_port is not None:
        params = {k: int(str(demo[k])) for k in ("seed", "shops", "orders_per_day", "history_days")}
        simulator, gateway = start_simulator_process(params, port=sim_port)
        echo(f"demo simulator serving {gateway} again for the schedule's runs")
    # A process started in the background by a script inherits SIGINT as ignored, and children keep
    # it: reset both so dagster dev can be stopped, and stop it (and the simulator) on SIGTERM too.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    ui = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", host,
                           "-p", str(port), "--log-level", log_level], env=env, cwd=env["DAGSTER_HOME"])
    try:
        url = f"http://{host}:{port}"
        if _wait_until_serving(url, ui, start_timeout):
            echo(f"Dagster UI on {url}  (code location {LOCATION_NAME}; DAGSTER_HOME={env['DAGSTER_HOME']}, "
                 f"{ENV_HOME}={env[ENV_HOME]})")
        elif ui.poll() is not None:
            echo(f"the Dagster UI exited before serving (code {ui.returncode}); see the lines above")
            return ui.returncode or 1
        return ui.wait()
    except KeyboardInterrupt:
        ui.send_signal(signal.SIGINT)
        try:
            return ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
            return 1
    finally:
        if ui.poll() is None:
            ui.terminate()
        if simulator is not None:
            stop_process(simulator)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
