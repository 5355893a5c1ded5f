"""The seeded shop: catalogue, trade timelines (eager, cheap) and trade details (lazy, deterministic).

A trade is fixed at generation time as a *timeline*: its type, an outcome and up to six event
timestamps. Everything else (buyer, receiver, lines, amounts) is re-derived on demand from a per-trade
seed, so a million trades cost a few columns of integers instead of a million dicts. The state of a
trade at time t is a pure function of its timeline and t (see ``trade_state`` in render.py).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from _random import Random as _Mt  # the C generator random.Random wraps: same sequence, no Python-level seed()
from dataclasses import dataclass, field
from typing import NamedTuple

DAY = 86_400
HOUR = 3_600

# Trade types. Codes index TYPE_NAMES; tmall_i18n is outside TOP's default type filter on purpose.
TYPE_NAMES = ("fixed", "auction", "step", "tmall_i18n")
FIXED, AUCTION, STEP, TMALL_I18N = range(4)
DEFAULT_TYPES = frozenset({"guarantee_trade", "auto_delivery", "ec", "cod", "step"})

# Outcomes: which lifecycle a trade follows.
NORMAL, UNPAID, REFUND_ONSALE, REFUND_AFTERSALE, STALLED, PRESALE_PAID, PRESALE_FORFEIT = range(7)
# Event kinds.
(CREATED, PAID, DEPOSIT, FINAL, SHIPPED, FINISHED, CLOSED_UNPAID, REFUND_REQ, REFUND_OK, FORFEIT,
 DRIFT) = range(11)
MAX_EVENTS = 6

KINDS: dict[int, tuple[int, ...]] = {
    NORMAL: (CREATED, PAID, SHIPPED, FINISHED),
    UNPAID: (CREATED, CLOSED_UNPAID),
    REFUND_ONSALE: (CREATED, PAID, REFUND_REQ, REFUND_OK, SHIPPED, FINISHED),  # single line stops at OK
    REFUND_AFTERSALE: (CREATED, PAID, SHIPPED, FINISHED, REFUND_REQ, REFUND_OK),
    STALLED: (CREATED, PAID, SHIPPED, FINISHED),  # parcel stuck in transit; auto-confirm after 10 days
    PRESALE_PAID: (CREATED, DEPOSIT, FINAL, SHIPPED, FINISHED),
    PRESALE_FORFEIT: (CREATED, DEPOSIT, FORFEIT),
}

# Orders arrive mostly in the evening (China time), least around 4 am.
HOUR_WEIGHTS = (3, 2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 7, 6, 6, 6, 6, 6, 7, 9, 11, 12, 10, 6)
WEEKDAY_FACTOR = (0.9, 0.92, 0.95, 1.0, 1.08, 1.25, 1.2)  # Monday .. Sunday
PROMO_FACTOR = 3.0

TID_BASE = 3_000_000_000_000_000_000
TID_SHOP = 10**17
OID_OFFSET = 10**18
REFUND_BASE = 200_000_000_000_000_000
REFUND_SHOP = 10**15
GMT8_OFFSET = 8 * HOUR


def mix(*parts: int) -> int:
    """A cheap deterministic 64-bit hash of a few integers (splitmix64 finaliser)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h


def mix_on(h: int, part: int) -> int:
    """``mix(*parts, part)`` given ``h = mix(*parts)``: a trade's tid, detail seed and open uid all
    hash (seed, shop_no, idx, ...), so the list path hashes that prefix once per trade."""
    h = (h ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 31)


def tid_of(shop_no: int, idx: int, seed: int) -> int:
    return tid_from_hash(shop_no, idx, mix(seed, shop_no, idx))


def tid_from_hash(shop_no: int, idx: int, trade_hash: int) -> int:
    """The tid given ``trade_hash = mix(seed, shop_no, idx)``."""
    return TID_BASE + shop_no * TID_SHOP + idx * 10_000 + (trade_hash % 1000) * 10


def locate_tid(tid: int, seed: int) -> tuple[int, int] | None:
    """(shop_no, idx) for a tid this world could have issued, else None."""
    off = tid - TID_BASE
    if off < 0:
        return None
    shop_no, rem = divmod(off, TID_SHOP)
    idx = rem // 10_000
    if tid_of(shop_no, idx, seed) != tid:
        return None
    return shop_no, idx


def oid_of(tid: int, line: int, nlines: int) -> int:
    return tid if nlines == 1 else tid + OID_OFFSET + line  # single-order trades have oid == tid


def refund_id_of(shop_no: int, idx: int, line: int) -> int:
    return REFUND_BASE + shop_no * REFUND_SHOP + idx * 10 + line


def locate_refund(refund_id: int) -> tuple[int, int, int] | None:
    off = refund_id - REFUND_BASE
    if off < 0:
        return None
    shop_no, rem = divmod(off, REFUND_SHOP)
    idx, line = divmod(rem, 10)
    return shop_no, idx, line


def day_start_gmt8(ts: int) -> int:
    return ts - (ts + GMT8_OFFSET) % DAY


# ------------------------------------------------------------------ catalogue

COLORS = ("红色", "黑色", "白色", "藏青", "灰色", "米白")
SIZES = ("S", "M", "L", "XL")
ADJ = ("纯棉", "加厚", "轻薄", "复古", "简约", "便携", "大容量", "防水", "磨砂", "真空")
NOUN = ("T恤", "保温杯", "帆布包", "卫衣", "雨伞", "水杯", "收纳盒", "毛巾", "袜子", "围巾", "台灯", "拖鞋")


@dataclass(frozen=True)
class Sku:
    item_no: int
    num_iid: int
    sku_id: str
    outer_iid: str
    outer_sku_id: str
    properties: str
    title: str
    cid: int
    price_cents: int
    base_stock: int


@dataclass(frozen=True)
class Line:
    sku: Sku
    num: int
    discount_cents: int
    key: int = field(default=-1, compare=False)  # position in Catalogue.lines (names cached order bytes)

    @property
    def total_cents(self) -> int:
        return self.sku.price_cents * self.num

    @property
    def payment_cents(self) -> int:
        return self.total_cents - self.discount_cents


LINE_NUMS = (1, 1, 1, 2, 2, 3)  # quantity draw; a line is (sku, quantity 1..3, discounted or not)


def line_key(sku_pos: int, num: int, discounted: bool) -> int:
    return sku_pos * 6 + (num - 1) * 2 + discounted


@dataclass(frozen=True)
class Catalogue:
    skus: tuple[Sku, ...]
    cum_weights: tuple[float, ...]   # popularity, for random.choices
    # Every possible order line, shared by all trades: a detail picks lines instead of building them
    # (and the list renderer serializes each line's static part once).
    lines: tuple[Line, ...] = ()


def make_catalogue(seed: int, shop_no: int, n_items: int = 40) -> Catalogue:
    rng = random.Random(mix(seed, shop_no, 0xCA7))
    skus: list[Sku] = []
    weights: list[float] = []
    for i in range(n_items):
        num_iid = 600_000_000_000 + shop_no * 10**8 + i * 1000 + rng.randrange(1000)
        title = rng.choice(ADJ) + rng.choice(NOUN)
        cid = 50_000_000 + rng.randrange(10_000)
        base = rng.choice((990, 1990, 2990, 3990, 4900, 5900, 7900, 9900, 12900, 19900, 29900, 39900))
        n_skus = rng.randint(1, 4)
        colors = rng.sample(COLORS, min(n_skus, len(COLORS)))
        popularity = 1.0 / (i + 1) ** 0.8  # a few best sellers and a long tail
        for k in range(n_skus):
            color, size = colors[k], SIZES[k % len(SIZES)]
            outer = f"{'ABCDEFGH'[shop_no % 8]}{i:03d}"
            skus.append(Sku(i, num_iid, str(5_000_000_000_000 + num_iid % 10**9 * 10 + k), outer,
                            f"{outer}-{k}{size}", f"颜色分类:{color};尺码:{size}", title, cid,
                            base + 1000 * (k % 2), rng.randrange(80, 600)))
            weights.append(popularity / n_skus)
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    lines = tuple(Line(sku, num, sku.price_cents // 10 if discounted else 0, line_key(k, num, discounted))
                  for k, sku in enumerate(skus) for num in (1, 2, 3) for discounted in (False, True))
    return Catalogue(tuple(skus), tuple(cum), lines)


# ------------------------------------------------------------------ timelines (eager)

@dataclass(frozen=True)
class DayPlan:
    """The trades created in one GMT+8 day, already in created order."""

    created: list[int]
    types: list[int]
    outcomes: list[int]
    nlines: list[int]
    events: list[tuple[int, ...]]   # ascending timestamps, one per kind in KINDS[outcome]


def day_count(seed: int, shop_no: int, day_ts: int, promo_day: int, orders_per_day: int) -> int:
    weekday = ((day_ts + GMT8_OFFSET) // DAY + 3) % 7  # 1970-01-01 was a Thursday
    factor = WEEKDAY_FACTOR[weekday] * (PROMO_FACTOR if day_ts == promo_day else 1.0)
    jitter = 0.95 + (mix(seed, shop_no, day_ts) % 1000) / 10_000
    return int(round(orders_per_day * factor * jitter))


def plan_day(seed: int, shop_no: int, day_ts: int, count: int) -> DayPlan:
    rng = random.Random(mix(seed, shop_no, day_ts, 0xDA7))
    hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=count)
    created = sorted(day_ts + h * HOUR + rng.randrange(HOUR) for h in hours)
    plan = DayPlan(created, [], [], [], [])
    r, u = rng.random, rng.uniform
    for c in created:
        x = r()
        if x < 0.07:
            ttype = STEP
            outcome = PRESALE_PAID if r() < 0.85 else PRESALE_FORFEIT
        else:
            ttype = TMALL_I18N if x < 0.11 else AUCTION if x < 0.14 else FIXED
            y = r()
            outcome = (UNPAID if y < 0.08 else REFUND_ONSALE if y < 0.12 else
                       REFUND_AFTERSALE if y < 0.14 else STALLED if y < 0.17 else NORMAL)
        z = r()
        nlines = 1 if z < 0.55 else 2 if z < 0.82 else 3 if z < 0.94 else 4
        plan.types.append(ttype)
        plan.outcomes.append(outcome)
        plan.nlines.append(nlines)
        plan.events.append(_timeline(outcome, nlines, c, r, u))
    return plan


def _timeline(outcome: int, nlines: int, c: int, r, u) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    pay = c + 5 + int(r() * 600)
    if outcome == UNPAID:
        return (c, c + int(u(20 * 60, DAY)))
    if outcome == PRESALE_FORFEIT:
        return (c, pay, pay + 5 * DAY)
    if outcome == PRESALE_PAID:
        final = pay + int(u(DAY, 5 * DAY))
        ship = final + int(u(HOUR, 48 * HOUR))
        return (c, pay, final, ship, ship + int(u(2 * DAY, 10 * DAY)))
    if outcome == REFUND_ONSALE:
        req = pay + int(u(600, 20 * HOUR))
        ok = req + int(u(300, DAY))
        if nlines == 1:
            return (c, pay, req, ok)
        ship = ok + int(u(HOUR, DAY))
        return (c, pay, req, ok, ship, ship + int(u(2 * DAY, 10 * DAY)))
    ship = pay + int(u(HOUR, 48 * HOUR))
    if outcome == STALLED:
        return (c, pay, ship, ship + 10 * DAY)
    finish = ship + int(u(2 * DAY, 10 * DAY))
    if outcome == REFUND_AFTERSALE:
        req = finish + int(u(HOUR, 3 * DAY))
        return (c, pay, ship, finish, req, req + int(u(HOUR, 3 * DAY)))
    return (c, pay, ship, finish)


def kinds_of(outcome: int, nlines: int) -> tuple[int, ...]:
    kinds = KINDS[outcome]
    return kinds[:4] if outcome == REFUND_ONSALE and nlines == 1 else kinds


# ------------------------------------------------------------------ details (lazy)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
REGIONS = (("浙江省", "杭州市", "西湖区", "文新街道"), ("广东省", "深圳市", "南山区", "粤海街道"),
           ("上海", "上海市", "浦东新区", "张江镇"), ("北京", "北京市", "朝阳区", "望京街道"),
           ("江苏省", "南京市", "鼓楼区", "湖南路街道"), ("四川省", "成都市", "武侯区", "玉林街道"),
           ("湖北省", "武汉市", "洪山区", "关山街道"), ("山东省", "青岛市", "市南区", "八大关街道"))
CARRIERS = ("中通快递", "圆通速递", "申通快递", "韵达快递", "顺丰速运", "EMS")
UID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MESSAGES = ("请尽快发货", "不要放快递柜", "送人的，请不要放发票", "")


class Detail(NamedTuple):
    """What a trade's seed decides beyond its timeline. A NamedTuple: built once per rendered trade,
    and tuple construction is several times cheaper than a frozen dataclass's ``__init__``."""

    buyer_nick: str
    uid_hash: int                       # buyer_open_uid is derived from it only when asked for
    # Draws kept raw, formatted only when asked for: the pipeline's list fields never read them.
    name_draw: int                      # index into SURNAMES
    mobile_draw: tuple[int, int]        # ("3578" index, digit)
    region: tuple[str, str, str, str]
    address_draw: int                   # index into ADDRESS_HEADS
    lines: tuple[Line, ...]
    post_fee_cents: int
    trade_from: str
    buyer_message: str
    refund_line: int
    carrier: str
    out_sid: str
    refund_reason: str

    @property
    def buyer_open_uid(self) -> str:
        return _open_uid(self.uid_hash)

    @property
    def receiver_name(self) -> str:
        return SURNAMES[self.name_draw] + "*"

    @property
    def receiver_mobile(self) -> str:
        return "1" + "3578"[self.mobile_draw[0]] + str(self.mobile_draw[1]) + "********"

    @property
    def address_masked(self) -> str:
        return ADDRESS_HEADS[self.address_draw] + "*街道**路**号****"


LOWER = "abcdefghijklmnopqrstuvwxyz"
NICK_TAIL = "0123456789xyz"
POST_FEES = (0, 0, 0, 800, 1000, 1200)
TRADE_FROMS = ("WAP,WAP", "TAOBAO", "TMALL", "WAP,WAP")
REFUND_REASONS = ("不想要了", "尺码不合适", "商品与描述不符", "七天无理由退换货")
ADDRESS_HEADS = "文中建人和平新"


def make_detail(seed: int, shop_no: int, idx: int, nlines: int, catalogue: Catalogue,
                trade_hash: int | None = None) -> Detail:
    """The trade's detail, drawn from its own seed. Runs once per rendered trade, so it is written
    for speed (C-level generator, inlined draws, shared Line objects); the sequence of draws is the
    world's definition and must never change order."""
    h = mix(seed, shop_no, idx) if trade_hash is None else trade_hash
    r = _Mt(mix_on(h, 0xDE7)).random
    cum, skus, all_lines = catalogue.cum_weights, catalogue.skus, catalogue.lines
    top, last = cum[-1], len(cum) - 1
    first = min(bisect_right(cum, r() * top), last)
    picked = [first]
    while len(picked) < nlines:  # distinct SKUs, redrawing on repeats
        k = min(bisect_right(cum, r() * top), last)
        sku_id = skus[k].sku_id
        for j in picked:
            if skus[j].sku_id == sku_id:
                break
        else:
            picked.append(k)
    lines = []
    for k in picked:
        num = LINE_NUMS[int(r() * 6)]
        lines.append(all_lines[line_key(k, num, r() < 0.25)])
    # The literal lengths below are len(LOWER), len(NICK_TAIL), len(SURNAMES)... (asserted below).
    nick = LOWER[int(r() * 26)] + "**" + NICK_TAIL[int(r() * 13)]
    name_draw = int(r() * 20)
    mobile_draw = (int(r() * 4), int(r() * 10))
    region = REGIONS[int(r() * 8)]
    address_draw = int(r() * 7)
    return Detail(nick, mix_on(h, 0x0D1D), name_draw, mobile_draw, region, address_draw, tuple(lines),
                  POST_FEES[int(r() * 6)], TRADE_FROMS[int(r() * 4)], MESSAGES[int(r() * 4)],
                  int(r() * nlines), CARRIERS[int(r() * 6)], str(10**11 + int(r() * (10**14 - 10**11))),
                  REFUND_REASONS[int(r() * 4)])


assert (len(LOWER), len(NICK_TAIL), len(SURNAMES), len(REGIONS), len(ADDRESS_HEADS), len(POST_FEES),
        len(TRADE_FROMS), len(MESSAGES), len(CARRIERS), len(REFUND_REASONS)) == (26, 13, 20, 8, 7, 6, 4, 4, 6, 4)


# Two base-64 digits per lookup: the open uid is 22 digits, least significant first.
_PAIRS = tuple(UID_ALPHABET[i % 64] + UID_ALPHABET[i // 64] for i in range(4096))


def _open_uid(h: int) -> str:
    """A stable 24-char buyer_open_uid like ``AAHk5d-EAAeGwJedwSFu0Xz7`` (two 64-bit hashes, base 64,
    least significant digit first; unrolled because the list APIs render one per trade)."""
    g, a, u = mix(h), _PAIRS, UID_ALPHABET
    return ("AA" + a[h & 4095] + a[h >> 12 & 4095] + a[h >> 24 & 4095] + a[h >> 36 & 4095] + a[h >> 48 & 4095]
            + u[h >> 60] + a[g & 4095] + a[g >> 12 & 4095] + a[g >> 24 & 4095] + a[g >> 36 & 4095]
            + a[g >> 48 & 4095] + u[g >> 60])
