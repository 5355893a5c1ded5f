"""Inventory snapshots below Dagster: the items.onsale.get pager against the simulator (every page, wrapped
and simplified layouts), the normaliser's rows and quarantine rules, and loading a snapshot from the lake
(replacing its rows, never doubling them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.normalize_inventory import normalize_items
from ordersync_pipeline.sync.snapshot import load_snapshot, take_snapshot, take_snapshots
from ordersync_pipeline.sync.streams import INVENTORY_SNAPSHOT, snapshot
from ordersync_pipeline.top import paging
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.warehouse import Warehouse

AT = datetime(2026, 11, 30, 8, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=4, shops=1, orders_per_day=5, history_days=1)) as s:
        yield s


def _client(sim: Simulator, *, simplify: bool = False) -> TopClient:
    cfg = sim.config()
    return TopClient(gateway=cfg.gateway, app_key=cfg.app_key, app_secret=cfg.secret().get_secret_value(),
                     simplify=simplify)


def _session(sim: Simulator) -> str:
    return sim.config().shops[0].session_key().get_secret_value()


@pytest.mark.parametrize("simplify", [False, True])
def test_the_pager_reads_every_item_then_its_skus_from_item_skus_get(sim: Simulator, simplify: bool) -> None:
    shop = sim.config().shops[0].shop_id
    truth = sim.world.inventory(shop)
    client = _client(sim, simplify=simplify)
    try:
        pages = list(paging.iter_onsale_pages(client, shop_id=shop, session=_session(sim), taken_at=AT,
                                              fields="num_iid,title,outer_id,price,approve_status,num,skus",
                                              sku_fields="sku_id,num_iid,quantity,outer_id", page_size=7))
    finally:
        client.close()
    lists = [p for p in pages if p.method == paging.ONSALE_GET]
    skus = [p for p in pages if p.method == paging.SKUS_GET]
    assert [p.page_no for p in lists] == list(range(1, len(lists) + 1)) and len(lists) == -(-len(truth) // 7)
    assert [p.method for p in pages] == [paging.ONSALE_GET, paging.SKUS_GET] * len(lists)  # one SKU call a page
    items = [item for page in lists for item in page.items]
    assert [i["num_iid"] for i in items] == [i["num_iid"] for i in truth]
    assert not any("skus" in i for i in items)  # items.onsale.get does not serve SKU detail
    got = {(s["num_iid"], s["sku_id"]): s["quantity"] for page in skus for s in page.items}
    assert set(got) == {(i["num_iid"], s["sku_id"]) for i in truth for s in i["skus"]}
    with pytest.raises(ValueError, match="between 1 and 40"):
        next(paging.iter_onsale_pages(client, shop_id=shop, session="x", taken_at=AT, fields="num_iid",
                                      sku_fields="sku_id", page_size=41))


def test_items_become_one_row_per_sku_and_bad_records_go_to_quarantine() -> None:
    items = [
        {"num_iid": 11, "title": "衬衫", "outer_id": "A1", "price": "99.00", "approve_status": "onsale", "num": 7,
         "skus": [{"sku_id": 501, "outer_id": "A1-S", "quantity": 3, "price": "89.50"},
                  {"sku_id": "502", "outer_id": "A1-M", "quantity": "4"}]},
        {"num_iid": "12", "title": "帽子", "price": "19.90", "num": 5},                       # no SKUs
        {"num_iid": 13, "skus": [{"sku_id": 601, "quantity": -1}]},                          # negative stock
        {"num_iid": None, "num": 1},                                                          # no id
        "not an object",
        {"num_iid": 14, "skus": [{"sku_id": 701, "quantity": "lots"}]},
        {"num_iid": 15, "title": "bad\x00title", "num": 1},
        {"num_iid": 16, "price": "free", "num": 1},
    ]
    details = [{"num_iid": 21, "sku_id": 801, "quantity": 6, "outer_id": "B1-S"}, {"sku_id": 802}, "junk"]
    batch = normalize_items("s", [*items, {"num_iid": 21, "title": "袜子", "num": 6}], taken_at=AT, details=details)
    rows = {(r["num_iid"], r["sku_id"]): r for r in batch.rows["inventory_snapshots"]}
    assert set(rows) == {(11, "501"), (11, "502"), (12, None), (21, "801")}
    assert (rows[(21, "801")]["quantity"], rows[(21, "801")]["outer_sku_id"]) == (6, "B1-S")
    assert rows[(11, "501")]["price"] == Decimal("89.50") and rows[(11, "502")]["price"] == Decimal("99.00")
    assert (rows[(11, "502")]["quantity"], rows[(11, "502")]["outer_sku_id"], rows[(11, "502")]["outer_iid"]) == (
        4, "A1-M", "A1")
    assert (rows[(12, None)]["quantity"], rows[(12, None)]["title"]) == (5, "帽子")
    assert all(r["taken_at"] == AT and r["shop_id"] == "s" for r in rows.values())
    reasons = [q["reason"] for q in batch.quarantine]
    assert len(reasons) == 8 and sum("inventory sku:" in r for r in reasons) == 2
    assert any("outside 0" in r for r in reasons) and any("no num_iid" in r for r in reasons)
    assert any("not an object" in r for r in reasons) and any("whole number" in r for r in reasons)
    assert any("no warehouse can store" in r for r in reasons) and any("not an amount" in r for r in reasons)
    assert {q["record_key"] for q in batch.quarantine} == {"13", None, "14", "15", "16"}  # None: no num_iid


def test_a_snapshot_loaded_twice_keeps_one_copy(sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    shop = sim.config().shops[0].shop_id
    wh = Warehouse(sqlite_url)
    wh.migrate()
    lake = PageLake(tmp_path / "lake")
    client = _client(sim)
    try:
        first = take_snapshot(INVENTORY_SNAPSHOT, client=client, session=_session(sim), warehouse=wh, lake=lake,
                              shop_id=shop, taken_at=AT)
    finally:
        client.close()
    expected = sum(len(i["skus"]) for i in sim.world.inventory(shop))
    assert first.ok and first.rows == expected and first.pages >= 1
    again = load_snapshot(snapshot("inventory"), warehouse=wh, lake=lake, shop_id=shop, taken_at=AT)
    assert again.rows == expected
    with wh.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM inventory_snapshots")).scalar_one() == expected
        assert conn.execute(sa.text("SELECT COUNT(*) FROM inventory_latest")).scalar_one() == expected
    wh.dispose()


def test_an_unknown_shop_session_fails_that_shop_only(sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    shop = sim.config().shops[0].shop_id
    wh = Warehouse(sqlite_url)
    wh.migrate()
    sessions = {shop: _session(sim)}

    def session(shop_id: str) -> str:
        return sessions[shop_id]

    client = _client(sim)
    try:
        outcomes = take_snapshots(INVENTORY_SNAPSHOT, shop_ids=["nope", shop], client=client, sessions=session,
                                  warehouse=wh, lake=PageLake(tmp_path / "lake"), taken_at=AT)
    finally:
        client.close()
    assert [o.ok for o in outcomes] == [False, True] and "nope" in (outcomes[0].error or "")
    wh.dispose()
