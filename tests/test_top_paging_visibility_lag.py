"""Reverse paging against the simulator over HTTP when changes become visible later than the safety lag."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ordersync_pipeline.config import SyncSettings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import SHANGHAI, format_top_time
from ordersync_pipeline.top.client import TopClient, TopResponse
from ordersync_pipeline.top.paging import iter_increment_pages
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy

VISIBILITY_LAG_S = 240  # longer than the default 3-minute safety lag
SECONDS_PER_CALL = 5    # a slow walk: small pages, or a quota shared with other shops


class SlowClient(TopClient):
    """A client whose every call takes ``SECONDS_PER_CALL`` of the simulator's stepped world clock."""

    def __init__(self, sim: Simulator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sim = sim
        self.visible_at: list[int] = []  # the increment index's instant as of each call

    def call(self, method: str, params: Any, *, session: str | None = None,
             shop_id: str | None = None) -> TopResponse:
        self.visible_at.append(self.sim.clock.now_ts() - VISIBILITY_LAG_S)
        try:
            return super().call(method, params, session=session, shop_id=shop_id)
        finally:
            self.sim.clock.advance(SECONDS_PER_CALL)


def test_a_slow_walk_under_visibility_lag_longer_than_the_safety_lag_loses_no_trade() -> None:
    # The original pager loses 27 of 778 trades of this window (run against it once): late-visible
    # changes entered at the top while trades modified after the window left, so the total did not grow.
    sync = SyncSettings()
    assert VISIBILITY_LAG_S > sync.safety_lag_minutes * 60
    settings = SimulatorSettings(seed=31, shops=1, orders_per_day=20_000, history_days=1, clock="stepped",
                                 visibility_lag_s=VISIBILITY_LAG_S,
                                 start_at=datetime(2026, 3, 10, 21, 0, tzinfo=SHANGHAI))
    with start_simulator(settings) as sim:
        shop = sim.shops[0]
        # One increment partition as the sync fetches it: [start - overlap, end), end safety_lag ago.
        end = sim.clock.now() - timedelta(minutes=sync.safety_lag_minutes)
        start = end - timedelta(minutes=sync.incremental_minutes + sync.overlap_minutes)
        client = SlowClient(sim, gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                            recorder=ListRecorder(), retry=RetryPolicy(max_attempts=3, base_delay_s=0.0))
        pages = list(iter_increment_pages(client, shop_id=shop.shop_id, session=shop.session,
                                          start_modified=start, end_modified=end, fields="tid,modified",
                                          page_size=10))
        # Ground truth: every trade whose modified, as the increment index showed it at the last
        # call, lies in the window (TOP's end bound is inclusive).
        lo, hi = format_top_time(start), format_top_time(end)
        truth = {t["tid"] for t in sim.world.trades(shop.shop_id, at=client.visible_at[-1])
                 if lo <= t["modified"] <= hi}
        at_first_call = {t["tid"] for t in sim.world.trades(shop.shop_id, at=client.visible_at[0])
                         if lo <= t["modified"] <= hi}
    seen = {t["tid"] for page in pages for t in page.items}
    assert len(truth) > 500
    assert truth - at_first_call, "no trade entered the window during the walk: the test proves nothing"
    assert truth <= seen, f"{len(truth - seen)} of {len(truth)} trades of the window were never read"
    assert [p.page_no for p in pages].count(1) >= 2  # the entries were seen and the span walked again
