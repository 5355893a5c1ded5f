"""The ``ordersync`` command: one CLI for everything the project does.

    ordersync simulator serve ...     a TOP gateway simulator (see ordersync_pipeline.simulator.cli)
    ordersync sync --config FILE      bring the warehouse up to date through the Dagster assets
    ordersync demo                    simulator + historical load + increments, then a summary
    ordersync dev                     the Dagster UI on the same instance and warehouse

Heavy imports (Dagster, SQLAlchemy) happen inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path

import click

from ordersync_pipeline.config import ENV_CONFIG, ConfigError, load_config


class LazySimulatorGroup(click.Group):
    """Mounts ``ordersync simulator`` without importing the simulator for other commands."""

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


def _parse_time(value: str | None) -> datetime | None:
    from ordersync_pipeline.timeutil import parse_local_time

    return None if value is None else parse_local_time(value)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=ENV_CONFIG, required=True, help="ordersync configuration file (YAML).")
@click.option("--from", "from_", metavar="TIME", help="Only windows from this time (ISO; Asia/Shanghai if naive).")
@click.option("--to", "to", metavar="TIME", help="Only windows before this time (ISO; Asia/Shanghai if naive).")
def sync(config_path: Path, from_: str | None, to: str | None) -> None:
    """Bring the warehouse up to date: historical load where nothing is synced yet, then every closed
    increment partition up to now minus the safety lag. Exits non-zero if anything failed."""
    try:
        load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    os.environ[ENV_CONFIG] = str(config_path.resolve())
    from ordersync_pipeline.defs.operate import run_sync

    report = run_sync(start=_parse_time(from_), end=_parse_time(to), echo=click.echo)
    click.echo(report.render())
    if not report.success:
        raise SystemExit(1)


@main.command()
@click.option("--shops", default=3, show_default=True, help="Simulated shops.")
@click.option("--orders-per-day", default=400, show_default=True, help="Orders per shop per day.")
@click.option("--history-days", default=7, show_default=True, help="Days of history in the simulator.")
@click.option("--seed", default=7, show_default=True)
def demo(shops: int, orders_per_day: int, history_days: int, seed: int) -> None:
    """Start the simulator, sync everything through Dagster, print a summary."""
    from ordersync_pipeline.defs.operate import run_demo

    report = run_demo(shops=shops, orders_per_day=orders_per_day, history_days=history_days,
                      seed=seed, echo=click.echo)
    click.echo(report.render())
    if not report.success:
        raise SystemExit(1)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=ENV_CONFIG, default=None, help="Configuration file (default: ORDERSYNC_HOME/ordersync.yaml).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
def dev(config_path: Path | None, host: str, port: int) -> None:
    """Open the Dagster UI on the same instance and warehouse the CLI uses (after `ordersync demo`,
    with the demo's simulator running again so scheduled runs reach it)."""
    from ordersync_pipeline.defs.operate import run_dev

    raise SystemExit(run_dev(config_path=config_path, host=host, port=port, echo=click.echo))


if __name__ == "__main__":
    main()
