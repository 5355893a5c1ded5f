"""Simulator settings and the shop handle the simulator hands to its users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ClockKind = Literal["real", "stepped", "accelerated"]
# What an injected failure looks like on the wire (faults.py): a TOP isp error (code 15), a reply
# held past the client's timeout, a body cut off or broken, an HTTP 502 from the proxy in front.
FailureKind = Literal["isp", "timeout", "truncated", "malformed", "http502"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("isp", "timeout", "truncated", "malformed", "http502")


@dataclass(frozen=True)
class ApiFailure:
    """One API failing for a while: ``rate`` of the calls to ``method`` (of ``shop_id``'s session, or of
    every shop) whose world time lies in ``[start, end)`` fail as ``kind``. Open-ended when a bound is
    None. The platform's bad hours are like this: one API degraded, the others fine."""

    method: str
    rate: float
    start: datetime | None = None
    end: datetime | None = None
    shop_id: str | None = None
    kind: FailureKind = "isp"

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"failure rate of {self.method} must be within 0..1, got {self.rate}")
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"failure kind must be one of {', '.join(FAILURE_KINDS)}, got {self.kind!r}")
        for name, bound in (("start", self.start), ("end", self.end)):
            if bound is not None and bound.utcoffset() is None:
                raise ValueError(f"failure window {name} must be timezone-aware")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("failure window end must be after its start")


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything that shapes a simulated gateway. Same settings + same seed = same world.

    ``fault_rate`` is the share of API requests that fail in some hostile way (see faults.py);
    ``visibility_lag_s`` delays changes in the increment API; ``page_drift`` is the probability that
    a list-page request first bumps a few trades in its window; ``rate_limit_per_min`` (None = no
    limit) is a per-app-key sliding one-minute window.

    ``api_failures`` make single APIs fail for a while (``ApiFailure``; more can be added at run time:
    ``Simulator.fail_api``). ``increment_miss_rate`` is the share of trades the increment API never
    lists (seeded; sold.get and fullinfo still see them), as a platform index that drops changes would:
    only a reconciliation against sold.get finds them. ``Simulator.hide_from_increment`` hides one.
    ``refund_vanish_rate`` is the share of refunds (seeded by refund_id) that refunds.receive.get lists
    without ``status`` and that taobao.refund.get then refuses with ``isv.refund-not-exist``: a refund
    deleted between the list and the detail call. ``Simulator.vanish_refund`` picks one.
    """

    seed: int = 7
    shops: int = 2
    orders_per_day: int = 500
    history_days: int = 7
    fault_rate: float = 0.0
    visibility_lag_s: float = 0.0
    page_drift: float = 0.0
    rate_limit_per_min: int | None = None
    app_key: str | None = None
    app_secret: str | None = None
    clock: ClockKind = "real"
    speed: float = 1.0
    host: str = "127.0.0.1"
    port: int = 0
    # Extras beyond the published contract, all with safe defaults.
    tmc_redelivery_s: float = 30.0      # world-clock seconds before an unconfirmed message comes back
    fault_timeout_s: float = 3.0        # how long a "timeout" fault sleeps (bounded on purpose)
    fault_slow_s: float = 0.4           # how long a "slow reply" fault sleeps
    reply_delay_s: float = 0.0          # every reply takes this long: a distant or busy platform
    fragment_cache_mb: int = 512        # bound on cached serialized trade fragments
    api_failures: tuple[ApiFailure, ...] = ()
    increment_miss_rate: float = 0.0
    refund_vanish_rate: float = 0.0
    # Where a stepped or accelerated world clock starts (aware); None = the host's now. A test that
    # steps through a whole past day starts the world there (a real clock always follows the host).
    start_at: datetime | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.shops <= 50:
            raise ValueError("shops must be within 1..50")
        if self.orders_per_day < 0 or self.history_days < 0:
            raise ValueError("orders_per_day and history_days must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0 or not 0.0 <= self.page_drift <= 1.0:
            raise ValueError("fault_rate and page_drift are probabilities within 0..1")
        if not 0.0 <= self.increment_miss_rate <= 1.0:
            raise ValueError("increment_miss_rate is a probability within 0..1")
        if not 0.0 <= self.refund_vanish_rate <= 1.0:
            raise ValueError("refund_vanish_rate is a probability within 0..1")
        if self.clock not in ("real", "stepped", "accelerated"):
            raise ValueError(f"unknown clock {self.clock!r}")
        if self.reply_delay_s < 0:
            raise ValueError("reply_delay_s must be >= 0")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if self.start_at is not None and self.start_at.utcoffset() is None:
            raise ValueError("start_at must be timezone-aware")
        if self.start_at is not None and self.clock == "real":
            raise ValueError("start_at needs clock='stepped' or 'accelerated'; a real clock follows the host")


@dataclass(frozen=True)
class SimShop:
    """One simulated seller. ``session`` is the seller's access token for this gateway."""

    shop_id: str
    seller_nick: str
    user_id: int
    session: str
