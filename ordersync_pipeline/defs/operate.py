"""Running the pipeline from a terminal: ``ordersync sync`` and ``ordersync demo``.

Runs go through the same Dagster jobs the schedules launch, executed in-process against a persistent
instance (``DAGSTER_HOME``, default ``ORDERSYNC_HOME/dagster``), so ``ordersync dev`` afterwards shows
their runs, partitions and metadata. Each path is one single run over a partition range.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ordersync_pipeline.config import ENV_CONFIG, ENV_HOME, ordersync_home

Echo = Callable[[str], None]
DEMO_MARKER = ".demo"

DAGSTER_YAML = """\
# Written by ordersync: the embedded default instance (SQLite storage under this folder).
# For production point storage at PostgreSQL instead; see the README.
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""


def ensure_dagster_home() -> Path:
    """``DAGSTER_HOME`` if set, else ``ORDERSYNC_HOME/dagster`` with a default dagster.yaml."""
    raw = os.environ.get("DAGSTER_HOME")
    home = Path(raw) if raw else ordersync_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    yaml_path = home / "dagster.yaml"
    if not yaml_path.exists():
        yaml_path.write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def dagster_env(config_path: Path | None) -> dict[str, str]:
    """Environment for ``dagster dev`` that points at this project's instance, config and data."""
    env = dict(os.environ)
    env[ENV_HOME] = str(ordersync_home())
    env["DAGSTER_HOME"] = str(ensure_dagster_home().resolve())
    path = config_path or ordersync_home() / "ordersync.yaml"
    env[ENV_CONFIG] = str(Path(path).resolve())
    return env


@dataclass
class StepReport:
    name: str
    partitions: int
    success: bool
    seconds: float
    run_id: str | None = None
    error: str | None = None


@dataclass
class SyncReport:
    steps: list[StepReport] = field(default_factory=list)
    trades_by_shop: dict[str, int] = field(default_factory=dict)
    orders_by_shop: dict[str, int] = field(default_factory=dict)
    api_calls: int = 0
    api_errors: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(step.success for step in self.steps)

    def render(self) -> str:
        lines = ["", "ordersync summary", "-----------------"]
        for step in self.steps:
            state = "ok" if step.success else f"FAILED: {step.error}"
            lines.append(f"{step.name:<12} {step.partitions:>6} partitions  {step.seconds:7.1f}s  "
                         f"run {step.run_id or '-'}  {state}")
        lines.append("")
        lines.append(f"{'shop':<16}{'trades':>10}{'lines':>10}")
        for shop in sorted(self.trades_by_shop):
            lines.append(f"{shop:<16}{self.trades_by_shop[shop]:>10}{self.orders_by_shop.get(shop, 0):>10}")
        lines.append("")
        lines.append(f"API calls: {self.api_calls} ({self.api_errors} failed attempts, retried)")
        lines.append(f"Quarantined records: {self.quarantined}")
        lines.append(f"Wall time: {self.seconds:.1f}s")
        lines.extend(self.notes)
        return "\n".join(lines)


def run_sync(*, start: datetime | None = None, end: datetime | None = None,
             echo: Echo = print) -> SyncReport:
    """Historical load for shops with none yet, then every closed increment partition."""
    started = time.perf_counter()
    since = datetime.now().astimezone()
    ensure_dagster_home()
    import dagster as dg

    from ordersync_pipeline.defs import assets as A
    from ordersync_pipeline.defs.automation import last_closed_increment_key
    from ordersync_pipeline.defs.partitions import SHOPS_NAME
    from ordersync_pipeline.defs.resources import TopApiResource, WarehouseResource
    from ordersync_pipeline.definitions import defs
    from ordersync_pipeline.timeutil import now as utc_now

    instance = dg.DagsterInstance.get()
    cfg = TopApiResource().settings()
    shops = [s.shop_id for s in cfg.shops]
    known = set(instance.get_dynamic_partitions(SHOPS_NAME))
    missing = [s for s in shops if s not in known]
    if missing:
        instance.add_dynamic_partitions(SHOPS_NAME, missing)
    warehouse = WarehouseResource().get_warehouse()  # migrated on first use
    report = SyncReport()

    # History is loaded per shop until every day of it is complete: a shop added later, or a load
    # that failed half-way, gets exactly the days it lacks (re-fetching a done day is harmless).
    day_keys = _keys_between(A.HISTORY_DAYS, start, end)
    missing_days = {s: [k for k in day_keys if k not in _completed_keys(warehouse, [s], "historical")]
                    for s in shops}
    for group in _contiguous(shops, [s for s in shops if missing_days[s]]):
        wanted = sorted({k for s in group for k in missing_days[s]})
        span = day_keys[day_keys.index(wanted[0]): day_keys.index(wanted[-1]) + 1]
        echo(f"historical load: {len(span)} days x {len(group)} shop(s) ({span[0]} .. {span[-1]}) as one run")
        report.steps.append(_execute(defs, "historical_load_job", group, span, name="historical"))

    last = last_closed_increment_key(utc_now())
    time_keys = _keys_between(A.INCREMENT_TIME, start, end, last=last)
    done = _completed_keys(warehouse, shops, "increment")
    todo = [k for k in time_keys if k not in done]
    if todo:
        first = time_keys.index(todo[0])
        span = time_keys[first:]
        echo(f"increment: {len(span)} partitions x {len(shops)} shop(s) ({span[0]} .. {span[-1]}) as one run")
        report.steps.append(_execute(defs, "incremental_sync_job", shops, span, name="increment"))
    else:
        echo("increment: already up to date")

    for shop in shops:
        report.trades_by_shop[shop] = warehouse.trade_count(shop_id=shop)
        report.orders_by_shop[shop] = warehouse.order_count(shop_id=shop)
    calls = warehouse.call_stats(since=since)
    report.api_calls, report.api_errors = calls.calls, calls.errors
    report.quarantined = warehouse.quarantine_count(since=since)
    report.seconds = time.perf_counter() - started
    return report


def _keys_between(partitions_def: object, start: datetime | None, end: datetime | None,
                  last: str | None = None) -> list[str]:
    keys: list[str] = list(partitions_def.get_partition_keys())  # type: ignore[attr-defined]
    if last is not None:
        keys = keys[: keys.index(last) + 1] if last in keys else []
    out = []
    for key in keys:
        window = partitions_def.time_window_for_partition_key(key)  # type: ignore[attr-defined]
        if start is not None and window.end <= start:
            continue
        if end is not None and window.start >= end:
            continue
        out.append(key)
    return out


def _completed_keys(warehouse: object, shops: list[str], stream: str) -> set[str]:
    """Time keys complete for every shop (recorded in sync_windows after all pages landed)."""
    per_shop = [{w.partition_key for w in warehouse.completed_windows(s, stream)} for s in shops]  # type: ignore[attr-defined]
    return set.intersection(*per_shop) if per_shop else set()


def _contiguous(order: list[str], wanted: list[str]) -> list[list[str]]:
    """Split ``wanted`` into runs contiguous in ``order`` (a multi-partition range is a product)."""
    groups: list[list[str]] = []
    for shop in order:
        if shop in wanted:
            if groups and order.index(groups[-1][-1]) == order.index(shop) - 1:
                groups[-1].append(shop)
            else:
                groups.append([shop])
    return groups


def _execute(defs: object, job_name: str, shops: list[str], time_keys: list[str], *, name: str) -> StepReport:
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    started = time.perf_counter()
    job = defs.resolve_job_def(job_name)  # type: ignore[attr-defined]
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(dg.MultiPartitionKey({"shop": shops[0], "time": time_keys[0]})),
        ASSET_PARTITION_RANGE_END_TAG: str(dg.MultiPartitionKey({"shop": shops[-1], "time": time_keys[-1]})),
        "ordersync/started_by": "cli",
    }
    # INFO, not DEBUG: one progress line per partition instead of every engine event.
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    result = job.execute_in_process(instance=dg.DagsterInstance.get(), tags=tags, run_config=run_config,
                                    raise_on_error=False)
    error = None
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = "; ".join(_failure_reason(e)[:600] for e in failures[:3]) or "run failed"
    return StepReport(name=name, partitions=len(shops) * len(time_keys), success=result.success,
                      seconds=time.perf_counter() - started, run_id=result.run_id, error=error)


def _failure_reason(event: object) -> str:
    """Why a step failed, in the asset's words (e.g. "... re-authorise this shop X"), not Dagster's
    generic "Execution of step ... failed."."""
    data = event.step_failure_data  # type: ignore[attr-defined]
    if data.user_failure_data is not None and data.user_failure_data.description:
        return str(data.user_failure_data.description)
    if data.error is not None:
        message: str = data.error.message
        return message.strip()
    return str(event.message)  # type: ignore[attr-defined]


def run_demo(*, shops: int, orders_per_day: int, history_days: int, seed: int,
             echo: Echo = print) -> SyncReport:
    """Simulator in the background + ``run_sync`` + a summary of where everything is."""
    home = ordersync_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_HOME] = str(home)
    _reset_demo_state(home)
    config_path = home / "ordersync.yaml"
    params = {"seed": seed, "shops": shops, "orders_per_day": orders_per_day, "history_days": history_days}
    echo(f"starting the TOP simulator: {shops} shops, {orders_per_day} orders/day, {history_days} days of history")
    proc, gateway = _start_simulator(params, port=0, write_config=config_path)
    try:
        echo(f"simulator serving {gateway}; configuration written to {config_path}")
        _set_demo_history(config_path, history_days)
        # Remembered so `ordersync dev` can bring the same (seeded, deterministic) shop back up.
        (home / DEMO_MARKER).write_text(json.dumps({**params, "gateway": gateway}), encoding="utf-8")
        os.environ[ENV_CONFIG] = str(config_path)
        report = run_sync(echo=echo)
    finally:
        _stop(proc)
    report.notes += [
        "",
        f"Warehouse:   {os.environ.get('ORDERSYNC_WAREHOUSE_URL') or home / 'warehouse.db'}",
        f"Raw pages:   {home / 'lake'}",
        f"Dagster:     {os.environ['DAGSTER_HOME']}",
        "Open the Dagster UI on these runs with:  ordersync dev",
    ]
    return report


def _start_simulator(params: dict[str, int], *, port: int,
                     write_config: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """``ordersync simulator serve`` in a child process; returns it and its gateway URL."""
    cmd = [sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--seed", str(params["seed"]), "--shops", str(params["shops"]),
           "--orders-per-day", str(params["orders_per_day"]), "--history-days", str(params["history_days"])]
    if write_config is not None:
        cmd += ["--write-config", str(write_config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline() if proc.stdout else ""
    if not first:
        _stop(proc)
        raise RuntimeError(f"the simulator exited before announcing itself (code {proc.poll()})")
    return proc, str(json.loads(first)["gateway"])


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def demo_simulator_for(config_path: Path) -> dict[str, object] | None:
    """The demo's simulator parameters when ``config_path`` is the configuration the demo wrote."""
    marker = config_path.parent / DEMO_MARKER
    if not marker.exists() or not config_path.exists():
        return None
    from ordersync_pipeline.config import load_config

    params: dict[str, object] = json.loads(marker.read_text(encoding="utf-8"))
    return params if load_config(config_path).gateway == params.get("gateway") else None


def run_dev(*, config_path: Path | None, host: str, port: int, echo: Echo = print) -> int:
    """``dagster dev`` on this project's instance; after ``ordersync demo`` also its simulator.

    The demo's simulator is seeded and anchored to calendar days, so the same parameters on the same
    port bring back the same shop: the schedule's runs then reach a gateway instead of failing.
    """
    env = dagster_env(config_path)
    simulator = None
    demo = demo_simulator_for(Path(env[ENV_CONFIG]))
    if demo is not None:
        sim_port = int(str(demo["gateway"]).rsplit(":", 1)[1].split("/", 1)[0])
        params = {k: int(str(demo[k])) for k in ("seed", "shops", "orders_per_day", "history_days")}
        simulator, gateway = _start_simulator(params, port=sim_port)
        echo(f"demo simulator serving {gateway} again for the schedule's runs")
    echo(f"Dagster UI on http://{host}:{port}  (DAGSTER_HOME={env['DAGSTER_HOME']}, "
         f"{ENV_HOME}={env[ENV_HOME]})")
    # A process started in the background by a script inherits SIGINT as ignored, and children keep
    # it: reset both so dagster dev can be stopped, and stop it (and the simulator) on SIGTERM too.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    ui = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-m", "ordersync_pipeline.definitions",
                           "-h", host, "-p", str(port)], env=env)
    try:
        return ui.wait()
    except KeyboardInterrupt:
        ui.send_signal(signal.SIGINT)
        try:
            return ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
            return 1
    finally:
        if simulator is not None:
            _stop(simulator)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _reset_demo_state(home: Path) -> None:
    """A demo starts from an empty warehouse and lake (its simulator is new each time)."""
    marker = home / DEMO_MARKER
    if marker.exists():
        for name in ("lake", "warehouse.db", "sync_anchor", "ratelimit.sqlite"):
            target = home / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    marker.touch()


def _set_demo_history(config_path: Path, history_days: int) -> None:
    from ordersync_pipeline.config import load_config, write_config

    cfg = load_config(config_path)
    cfg.sync.history_days = history_days
    # The demo's simulator enforces no quota; a real app's quota goes in the real config.
    cfg.rate_limit_per_minute = 6000
    write_config(cfg, config_path, header="# Written by `ordersync demo` for the local TOP simulator.\n")
