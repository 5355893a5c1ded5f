"""The ``ordersync`` command: one CLI for everything the project does.

    ordersync simulator serve ...     a TOP gateway simulator (see ordersync_pipeline.simulator.cli)
    ordersync sync --config FILE      bring the warehouse up to date through the Dagster assets
    ordersync demo                    simulator + historical load + increments, then a summary
    ordersync dev                     the Dagster UI on the same instance and warehouse
    ordersync metrics serve --port N  Prometheus metrics read from the warehouse

Heavy imports (Dagster, SQLAlchemy) happen inside the commands so ``--help`` stays instant.

Errors an operator can act on (configuration, warehouse, TOP credentials, ...) end as one line
``Error: ...`` and exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ordersync_pipeline.envvars import ENV_CONFIG


def _operator_errors() -> tuple[type[BaseException], ...]:
    """What a person fixes or waits out, rather than a bug. Imported only once something failed."""
    import sqlalchemy as sa
    from pydantic import ValidationError

    from ordersync_pipeline.app.dev import PortBusy
    from ordersync_pipeline.config import ConfigError
    from ordersync_pipeline.app.instance import SyncBusy
    from ordersync_pipeline.sync.lake import LakeError
    from ordersync_pipeline.top.errors import TopError
    from ordersync_pipeline.warehouse.connect import WarehouseError

    return (ConfigError, ValidationError, WarehouseError, TopError, LakeError, sa.exc.OperationalError,
            PermissionError, PortBusy, SyncBusy)


class LazySimulatorGroup(click.Group):
    """Mounts ``ordersync simulator`` without importing the simulator for other commands, and turns
    operator errors raised by any command into one ``Error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            if not isinstance(exc, _operator_errors()):
                raise
            from ordersync_pipeline.failures import describe

            raise click.ClickException(describe(exc)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), "simulator"]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "simulator":
            from ordersync_pipeline.simulator.cli import simulator

            return simulator
        return super().get_command(ctx, name)


@click.group(cls=LazySimulatorGroup)
@click.version_option(package_name="ordersync")
def main() -> None:
    """ordersync: keep a warehouse in step with Taobao/Tmall shops."""
    # Dagster flags single-run backfill policies as beta on every import; operators can't act on it.
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")


def _local_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO date or datetime, Asia/Shanghai when it has no offset; a typo is a usage error (exit 2)."""
    if value is None:
        return None
    from ordersync_pipeline.timeutil import parse_local_time

    try:
        return parse_local_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or time: give e.g. 2026-11-30 or "
                                 "2026-11-30T10:00 (Asia/Shanghai unless an offset such as +08:00 is given)"
                                 ) from None


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=ENV_CONFIG, required=True, help="ordersync configuration file (YAML).")
@click.option("--from", "from_", metavar="TIME", callback=_local_time,
              help="Only windows from this time (ISO; Asia/Shanghai if naive).")
@click.option("--to", "to", metavar="TIME", callback=_local_time,
              help="Only windows before this time (ISO; Asia/Shanghai if naive).")
@click.option("--wait", "wait_seconds", default=0.0, metavar="SECONDS", show_default=True,
              help="If another sync holds this ORDERSYNC_HOME, wait this long for it instead of exiting.")
def sync(config_path: Path, from_: datetime | None, to: datetime | None, wait_seconds: float) -> None:
    """Bring the warehouse up to date: historical load where nothing is synced yet, then every closed
    increment partition up to now minus the safety lag. Exits non-zero if anything failed."""
    from ordersync_pipeline.settings import load_settings

    settings = load_settings(config_path)
    os.environ[ENV_CONFIG] = str(config_path.resolve())
    # The warehouse is opened (and migrated) first, so one that is down or misconfigured fails here in
    # one line rather than in every partition of a run.
    from ordersync_pipeline.app.sync import run_sync

    report = run_sync(settings, start=from_, end=to, echo=click.echo, wait_seconds=wait_seconds)
    click.echo(report.render())
    if not report.success:
        raise SystemExit(1)


@main.command()
@click.option("--shops", default=3, show_default=True, help="Simulated shops.")
@click.option("--orders-per-day", default=250, show_default=True,
              help="Orders per shop per day (250 x 35 days keeps the demo near a minute and a half).")
@click.option("--history-days", default=35, show_default=True,
              help="Days of history in the simulator (35: enough for the forecast's four-week backtest).")
@click.option("--seed", default=7, show_default=True)
def demo(shops: int, orders_per_day: int, history_days: int, seed: int) -> None:
    """Start the simulator, sync everything through Dagster, print a summary."""
    from ordersync_pipeline.app.demo import run_demo

    report = run_demo(shops=shops, orders_per_day=orders_per_day, history_days=history_days,
                      seed=seed, echo=click.echo)
    click.echo(report.render())
    if not report.success:
        raise SystemExit(1)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=ENV_CONFIG, default=None, help="Configuration file (default: ORDERSYNC_HOME/ordersync.yaml).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True,
              help="Level of the UI's and daemon's own lines (info: every sensor evaluation too).")
def dev(config_path: Path | None, host: str, port: int, log_level: str) -> None:
    """Open the Dagster UI on the same instance and warehouse the CLI uses (after `ordersync demo`,
    with the demo's simulator running again so scheduled runs reach it)."""
    from ordersync_pipeline.app.dev import run_dev

    raise SystemExit(run_dev(config_path=config_path, host=host, port=port, echo=click.echo,
                             log_level=log_level))


@main.group()
def metrics() -> None:
    """Prometheus metrics read from the warehouse."""


@metrics.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=ENV_CONFIG, default=None,
              help="Configuration file, for the shops (default: ORDERSYNC_HOME/ordersync.yaml).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9464, show_default=True, help="Port of the /metrics endpoint.")
@click.option("--window-minutes", default=60, show_default=True, type=click.IntRange(1, 24 * 60),
              help="Span of the *_recent gauges (recent calls and quarantine).")
def metrics_serve(config_path: Path | None, host: str, port: int, window_minutes: int) -> None:
    """Serve /metrics for the warehouse (ORDERSYNC_WAREHOUSE_URL) and the configured shops until
    interrupted. A warehouse that is down is reported as ordersync_up 0, never as a crash."""
    import threading
    from datetime import timedelta

    from sqlalchemy import make_url

    from ordersync_pipeline.metrics import start_metrics_server
    from ordersync_pipeline.settings import load_settings

    settings = load_settings(config_path)
    try:
        server, _thread, stop = start_metrics_server(settings, host=host, port=port,
                                                     window=timedelta(minutes=window_minutes))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another "
                                   "--port or stop what uses it") from None
    warehouse = make_url(settings.warehouse_url).render_as_string(hide_password=True)
    click.echo(f"serving Prometheus metrics of {warehouse} on http://{host}:{server.server_port}/metrics "
               "(Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
