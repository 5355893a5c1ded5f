"""Detail calls refused for one record (sync/refusals.py): which refusals count, the refusal page's round
trip through the lake (alone and shared by coalesced partitions), the normalisers' quarantine rows, and
the trade_details cache quarantining a refused trade while caching the others."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ordersync_pipeline.sync.details import detail_candidates, refresh_details
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.lake_select import Selection
from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.sync.normalize_refunds import normalize_refunds
from ordersync_pipeline.sync.refusals import REFUSED, is_record_refusal, refusal_of, refusal_page
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.top.errors import (
    BusinessError,
    InvalidSessionError,
    MalformedResponseError,
    TopError,
    TransportError,
    classify,
)
from ordersync_pipeline.top.pages import REFUNDS, TRADES, Page, parse_list_body
from ordersync_pipeline.warehouse.connect import open_warehouse

START = datetime(2026, 11, 26, 10, 10, tzinfo=SHANGHAI)
END = datetime(2026, 11, 26, 10, 45, tzinfo=SHANGHAI)
NOW = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
REFUND_GET = "taobao.refund.get"
FULLINFO = "taobao.trade.fullinfo.get"
NOT_EXIST = {"code": 15, "msg": "Remote service error", "sub_code": "isv.refund-not-exist",
             "sub_msg": "退款不存在", "request_id": "rid42"}


def error(method: str = REFUND_GET, **fields: Any) -> TopError:
    return classify({**NOT_EXIST, **fields}, method, shop_id="shop-1")


@pytest.mark.parametrize(("exc", "refused"), [
    (error(), True),
    (error(FULLINFO, sub_code="isv.trade-not-exist"), True),
    (error(FULLINFO, sub_code="isv.trade-not-exist:4012345678901234567"), True),
    (error(sub_code="isv.invalid-parameter:refund_id"), True),     # the record's own key
    (error(sub_code="isv.invalid-parameter:fields"), False),       # our request, not the record
    (error(sub_code="isv.invalid-permission"), False),             # the shop's rights: every record
    (error(sub_code="isv.refund-service-error:busy"), False),
    (error(code=27, msg="Invalid session", sub_code="invalid-sessionkey"), False),
    (error(code=7, msg="App Call Limited", sub_code="accesscontrol.limited-by-app-access-count"), False),
    (error(code=11, msg="Insufficient ISV Permissions", sub_code="isv.permission-api-package-empty"), False),
    (error(sub_code="isp.remote-service-error"), False),
    (error(sub_code="isp.top-parse-error"), False),
    (error(code=41, msg="Invalid arguments:refund_id", sub_code=None), False),
    (TransportError("timed out", method=REFUND_GET), False),
    (MalformedResponseError("truncated", method=REFUND_GET), False),
    (ValueError("not a TOP error"), False),
])
def test_only_a_refusal_about_the_record_itself_counts(exc: BaseException, refused: bool) -> None:
    assert is_record_refusal(exc, key_param="refund_id") is refused


def list_page(method: str, key: str, records: list[dict[str, Any]], *, page_no: int = 1) -> Page:
    body = json.dumps({f"{method[len('taobao.'):].replace('.', '_')}_response": {
        key: {key[:-1]: records}, "total_results": len(records), "has_next": False}}).encode()
    shape = REFUNDS if key == "refunds" else TRADES
    items, total, has_next = parse_list_body(body, shape, method=method)
    return Page(shop_id="shop-1", method=method, window_start=START, window_end=END, page_no=page_no,
                page_size=100, request_id="list", fetched_at=NOW, body=body, items=items,
                total_results=total, has_next=has_next)


GONE = {"refund_id": "200000000000000001", "modified": "2026-11-26 10:20:00"}
GOOD = {"refund_id": "200000000000000002", "tid": 3000000000000000002, "oid": 3000000000000000012,
        "status": "SUCCESS", "refund_fee": "5.00", "modified": "2026-11-26 10:40:00"}


def refused_refund_page() -> Page:
    assert isinstance(exc := error(), BusinessError)
    return refusal_page(exc, record=GONE, shop_id="shop-1", method=REFUND_GET, window_start=START,
                        window_end=END)


def test_a_refusal_page_round_trips_through_the_lake_and_becomes_a_quarantine_row(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    pages = [list_page("taobao.refunds.receive.get", "refunds", [GONE, GOOD]), refused_refund_page()]
    manifest = lake.write_partition(shop_id="shop-1", stream="refunds.increment", partition_key="k",
                                    pages=iter(pages))
    assert (manifest.pages, manifest.items) == (2, 3)     # the refused record counts as fetched
    read = list(lake.read_partition(shop_id="shop-1", stream="refunds.increment", partition_key="k",
                                    shape=REFUNDS))
    assert [p.items for p in read] == [p.items for p in pages]
    refusal = refusal_of(read[1].items[0])
    assert refusal is not None and refusal.method == REFUND_GET and refusal.error == NOT_EXIST

    batch = normalize_refunds("shop-1", [i for p in read for i in p.items], synced_at=NOW, fetched_at=NOW,
                              source="increment")
    assert [r["refund_id"] for r in batch.rows["refunds"]] == [int(GOOD["refund_id"])]
    [row] = batch.quarantine
    assert row["record_key"] == GONE["refund_id"] and row["source"] == "increment"
    assert row["reason"] == (f"refund {GONE['refund_id']}: the detail call was refused for this record: "
                             f"{REFUND_GET}: Remote service error (退款不存在) "
                             "[code=15, sub_code=isv.refund-not-exist, request_id=rid42]")
    assert json.loads(row["payload"]) == GONE and REFUSED not in row["payload"]


def test_partitions_sharing_a_fetch_each_keep_only_their_own_refusal(tmp_path: Path) -> None:
    lake = PageLake(tmp_path)
    pages = [list_page("taobao.refunds.receive.get", "refunds", [GOOD, GONE]), refused_refund_page()]
    middle = START + timedelta(minutes=20)           # 10:30: GONE (10:20) is early's, GOOD (10:40) late's
    selections = [Selection(partition_key=key, start=start, end=end, time_field="modified",
                            record_key="refund_id")
                  for key, start, end in (("early", START, middle), ("late", middle, END))]
    lake.write_shared(shop_id="shop-1", stream="refunds.increment", pages=iter(pages), selections=selections)

    def items(key: str) -> list[Any]:
        return [i for p in lake.read_partition(shop_id="shop-1", stream="refunds.increment", partition_key=key,
                                               shape=REFUNDS) for i in p.items]

    early, late = items("early"), items("late")
    assert [i["refund_id"] for i in early] == [GONE["refund_id"]] * 2 and refusal_of(early[1]) is not None
    assert late == [GOOD]


def test_a_trade_refused_by_fullinfo_is_quarantined_not_loaded_without_its_lines() -> None:
    trade = {"tid": 4000000000000000001, "status": "TRADE_FINISHED", "modified": "2026-11-26 10:20:00",
             "buyer_nick": "someone", "receiver_mobile": "13800000000"}
    exc = error(FULLINFO, sub_code="isv.trade-not-exist", sub_msg="交易订单不存在")
    page = refusal_page(exc, record=trade, shop_id="shop-1", method=FULLINFO, window_start=START,
                        window_end=END)
    batch = normalize_trades("shop-1", page.items, fetched_at=NOW, synced_at=NOW, source="increment")
    assert batch.trades == [] and batch.orders == []
    [row] = batch.quarantine
    assert row["record_key"] == str(trade["tid"]) and "isv.trade-not-exist" in row["reason"]
    assert FULLINFO in row["reason"] and "13800000000" not in row["payload"]   # PII rule still applies


class FakeFullinfo:
    def __init__(self, refuse: dict[int, TopError]) -> None:
        self.refuse, self.asked = refuse, []  # type: list[int]

    def __call__(self, client: Any, *, shop_id: str, session: str, tid: int, fields: str) -> dict[str, Any]:
        self.asked.append(tid)
        if tid in self.refuse:
            raise self.refuse[tid]
        return {"tid": tid, "modified": "2026-11-26 10:20:00", "type": "step"}


def test_trade_details_quarantines_a_refused_trade_and_caches_the_others(tmp_path: Path) -> None:
    warehouse = open_warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    gone, kept = 4000000000000000001, 4000000000000000002
    fetch = FakeFullinfo({gone: error(FULLINFO, sub_code="isv.trade-not-exist")})
    candidates = {gone: "2026-11-26 10:20:00", kept: "2026-11-26 10:20:00"}
    result = refresh_details(client=object(), warehouse=warehouse, shop_id="shop-1",  # type: ignore[arg-type]
                             session="s", candidates=candidates, synced_at=NOW, fetch=fetch)
    assert (result.fetched, result.refused) == (2, 1)
    assert set(warehouse.cached_detail_modified([gone, kept])) == {kept}
    with warehouse.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT record_key, source, reason FROM quarantine").all()
    assert [(r[0], r[1]) for r in rows] == [(str(gone), "trade_details")]
    assert "isv.trade-not-exist" in rows[0][2] and FULLINFO in rows[0][2]

    # A refusal about the session is not the trade's: the partition fails as before.
    session_error = error(FULLINFO, code=27, msg="Invalid session", sub_code="invalid-sessionkey")
    assert isinstance(session_error, InvalidSessionError)
    with pytest.raises(InvalidSessionError):
        refresh_details(client=object(), warehouse=warehouse, shop_id="shop-1",  # type: ignore[arg-type]
                        session="s", candidates={gone: "2026-11-26 10:25:00"}, synced_at=NOW,
                        fetch=FakeFullinfo({gone: session_error}))
    warehouse.dispose()


def test_a_trade_refused_at_fetch_time_is_not_asked_for_again_by_trade_details() -> None:
    trade = {"tid": 4000000000000000001, "status": "TRADE_FINISHED", "modified": "2026-11-26 10:20:00"}
    listed = list_page("taobao.trades.sold.increment.get", "trades", [trade])
    refused = refusal_page(error(FULLINFO, sub_code="isv.trade-not-exist"), record=trade, shop_id="shop-1",
                           method=FULLINFO, window_start=START, window_end=END)
    wanted, answered = detail_candidates([listed, refused], frozenset({"incomplete"}))
    assert wanted == {} and answered == {}
    # Without the refusal the incomplete trade would be wanted.
    assert detail_candidates([listed], frozenset({"incomplete"}))[0] == {trade["tid"]: trade["modified"]}
