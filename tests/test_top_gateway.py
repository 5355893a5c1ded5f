"""The configured gateway: one shared rate budget however many threads ask for clients at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ordersync_pipeline.config import OrdersyncConfig
from ordersync_pipeline.top.gateway import Gateway


def test_threads_asking_for_clients_together_share_one_budget(tmp_path: Path) -> None:
    # Fetch threads on a fresh home used to build the local budget file twice at once ("database is
    # locked" for one of them).
    config = OrdersyncConfig.model_validate({
        "gateway": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s",
        "shops": [{"shop_id": "s", "seller_nick": "s", "session": "x"}]})
    for attempt in range(5):
        gateway = Gateway(config, home=tmp_path / str(attempt), redis_url=None)
        with ThreadPoolExecutor(max_workers=8) as pool:
            clients = list(pool.map(lambda _: gateway.client(), range(8)))
        assert len({id(c.rate_budget) for c in clients}) == 1
        for client in clients:
            client.close()
