"""``ordersync simulator serve``: run a simulated TOP gateway until SIGINT/SIGTERM.

The first stdout line is one JSON object (gateway, app_key, app_secret, shops with sessions) so a
parent process can read it and start calling; nothing else is printed to stdout.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType

import click

from ordersync_pipeline.config import write_config
from ordersync_pipeline.simulator.server import start_simulator
from ordersync_pipeline.simulator.settings import ApiFailure, SimulatorSettings


def parse_rate(value: str | None) -> int | None:
    """``100/min`` or ``100`` -> 100 calls per minute; None/``0`` -> no limit."""
    if not value:
        return None
    text = value.strip().lower().removesuffix("/min").removesuffix("/m")
    try:
        n = int(text)
    except ValueError:
        raise click.BadParameter(f"expected N or N/min, got {value!r}") from None
    return n or None


def parse_failure(text: str) -> ApiFailure:
    """``METHOD=RATE`` -> an ``ApiFailure`` of isp errors for the whole run."""
    method, sep, rate = text.partition("=")
    try:
        if not sep or not method.strip():
            raise ValueError("expected METHOD=RATE")
        return ApiFailure(method.strip(), float(rate))
    except ValueError as exc:
        raise click.BadParameter(f"--fail {text!r}: {exc}") from None


@click.group("simulator")
def simulator() -> None:
    """A local TOP gateway with a seeded shop world (no seller account needed)."""


@simulator.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=int, show_default=True, help="0 picks a free port")
@click.option("--seed", default=7, type=int, show_default=True)
@click.option("--shops", default=2, type=int, show_default=True)
@click.option("--orders-per-day", default=500, type=int, show_default=True)
@click.option("--history-days", default=7, type=int, show_default=True)
@click.option("--fault-rate", default=0.0, type=float, show_default=True)
@click.option("--visibility-lag", "visibility_lag", default=0.0, type=float, help="seconds")
@click.option("--page-drift", default=0.0, type=float)
@click.option("--rate-limit", default=None, help="calls per minute per app key, e.g. 100/min")
@click.option("--app-key", default=None)
@click.option("--app-secret", default=None)
@click.option("--clock", "clock", default="real", type=click.Choice(["real", "accelerated", "stepped"]))
@click.option("--speed", default=1.0, type=float, help="world seconds per real second (accelerated)")
@click.option("--fail", "fail", multiple=True, metavar="METHOD=RATE",
              help="make one API fail at RATE (0..1) with isp errors, e.g. "
                   "taobao.trades.sold.increment.get=0.2 (repeatable; time windows: POST /admin/failures)")
@click.option("--increment-miss-rate", default=0.0, type=float,
              help="share of trades the increment API never lists (only reconciliation finds them)")
@click.option("--refund-vanish-rate", default=0.0, type=float,
              help="share of refunds listed incompletely and then refused by taobao.refund.get "
                   "(isv.refund-not-exist), as if deleted between the list and the detail call")
@click.option("--reply-delay", "reply_delay", default=0.0, type=float,
              help="seconds every reply takes (a distant or busy platform)")
@click.option("--write-config", "write_config_path", default=None, type=click.Path(dir_okay=False),
              help="write a ready ordersync config file for this gateway")
def serve(host: str, port: int, seed: int, shops: int, orders_per_day: int, history_days: int,
          fault_rate: float, visibility_lag: float, page_drift: float, rate_limit: str | None,
          app_key: str | None, app_secret: str | None, clock: str, speed: float, fail: tuple[str, ...],
          increment_miss_rate: float, refund_vanish_rate: float, reply_delay: float,
          write_config_path: str | None) -> None:
    """Serve until SIGINT or SIGTERM."""
    settings = SimulatorSettings(
        seed=seed, shops=shops, orders_per_day=orders_per_day, history_days=history_days,
        fault_rate=fault_rate, visibility_lag_s=visibility_lag, page_drift=page_drift,
        rate_limit_per_min=parse_rate(rate_limit), app_key=app_key, app_secret=app_secret,
        clock=clock, speed=speed, host=host, port=port,  # type: ignore[arg-type]
        api_failures=tuple(parse_failure(text) for text in fail), increment_miss_rate=increment_miss_rate,
        refund_vanish_rate=refund_vanish_rate, reply_delay_s=reply_delay)
    sim = start_simulator(settings)
    if write_config_path:
        write_config(sim.config(), write_config_path,
                     header=f"# written by `ordersync simulator serve` for {sim.gateway_url}\n")
    click.echo(json.dumps({
        "gateway": sim.gateway_url, "app_key": sim.app_key, "app_secret": sim.app_secret,
        "shops": [{"shop_id": s.shop_id, "seller_nick": s.seller_nick, "session": s.session,
                   "user_id": s.user_id} for s in sim.shops]}, ensure_ascii=False))
    sys.stdout.flush()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()


if __name__ == "__main__":
    simulator()
