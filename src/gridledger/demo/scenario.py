"""The demo's market: who trades what, when, on which grid.

Three phases on one chain, one hour of market time each (four 15-minute slots t1..t4 and a
spare slot for the last readings):

* **CASE 1** (seed 000 §VI, grid-connected 9-bus microgrid): tr1 DG2 -> L5 300 kW over t1–t4,
  tr2 DG3 -> L7 200 kW over t2–t4, tr3 "DG1" (the grid supply at bus 1) -> L9 250 kW over
  t3–t4.  Each seller offers exactly its trade when the buyer bids, ten minutes before the
  trade starts, so the book pairs them as in the paper (Fig. 3's overlapping trades).
* **CASE 2** (islanded): the same three trades; bus 1 has no generator when islanded, so tr3 is
  sold by DG4, the third DG.
* **Seller selection** (seed 002 §6, IEEE 9-bus): the generators at buses 1, 2, 3 all offer; the
  DSO publishes its ranking (loss increase, line overloads: Table 5); L7 buys 100 MW over t1–t4
  and L5 125 MW over t2–t4 and the market gives each the seller the ranking prefers, although a
  cheaper one is on offer.

Prices are in utoken per kWh (1 token = 10^6 utoken).  All the numbers are here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SLOT_MS = 900_000
MIN_MS = 60_000


@dataclass(frozen=True)
class Party:
    name: str
    bus: int
    funds_utoken: int
    green: bool = False  # renewable generation: earns RECs on metered injection
    deviation_ppm: int = 30_000  # meter deviation from schedule, uniform in ±this


@dataclass(frozen=True)
class OrderPlan:
    party: str
    kind: str  # "offer" | "bid"
    power_kw: float
    price_utoken_per_kwh: int
    start_slot: int  # 0 = t1
    end_slot: int  # exclusive
    post_min_before_start: int = 10
    regulation_kvar: float = 0.0
    label: str = ""


@dataclass(frozen=True)
class Phase:
    key: str
    title: str
    case: str  # gridledger.grid.cases name
    regulators: dict[int, str]  # bus -> party paid for reactive support there
    orders: tuple[OrderPlan, ...]
    trades: tuple[tuple[str, str, str], ...]  # (label, seller, buyer) as the paper names them
    ranking_buyers: tuple[tuple[int, float], ...] = ()  # (bus, kW) the DSO ranks sellers for
    ranking_sellers: tuple[int, ...] = ()
    n_slots: int = 3
    power_scale_kw: float = 1.0  # MW-sized transmission case: 1000


MICROGRID_PARTIES = (
    Party("GRID", 1, 10**9),
    Party("DG2", 2, 10**9, green=True),
    Party("DG3", 3, 10**9, green=True),
    Party("DG4", 4, 10**9, green=True),
    Party("L5", 5, 10**11),
    Party("L7", 7, 10**11),
    Party("L9", 9, 10**11, deviation_ppm=90_000),  # a sloppy meter: penalized
)
IEEE9_PARTIES = (
    Party("G1", 1, 10**9, green=True),  # a wind farm: earns RECs
    Party("G2", 2, 10**9),
    Party("G3", 3, 10**9),
)
PARTIES = MICROGRID_PARTIES + IEEE9_PARTIES


def _seed000_orders(tr3_seller: str, prices: tuple[int, int, int]) -> tuple[OrderPlan, ...]:
    p1, p2, p3 = prices
    return (
        OrderPlan("DG2", "offer", 300, p1, 0, 3, regulation_kvar=1500, label="tr1"),
        OrderPlan("L5", "bid", 300, p1 + 20_000, 0, 3, label="tr1"),
        OrderPlan("DG3", "offer", 200, p2, 1, 3, regulation_kvar=1500, label="tr2"),
        OrderPlan("L7", "bid", 200, p2 + 20_000, 1, 3, label="tr2"),
        OrderPlan(tr3_seller, "offer", 250, p3, 2, 3, label="tr3"),
        OrderPlan("L9", "bid", 250, p3 + 20_000, 2, 3, label="tr3"),
    )


PHASES = (
    Phase(
        key="case1",
        title="CASE 1 — grid-connected microgrid (seed 000 Table III)",
        case="microgrid9",
        regulators={2: "DG2", 3: "DG3", 4: "DG4"},
        orders=_seed000_orders("GRID", (110_000, 105_000, 120_000)),
        trades=(("tr1", "DG2", "L5"), ("tr2", "DG3", "L7"), ("tr3", "GRID", "L9")),
    ),
    Phase(
        key="case2",
        title="CASE 2 — islanded microgrid (seed 000 Table III)",
        case="microgrid9-islanded",
        regulators={2: "DG2", 3: "DG3", 4: "DG4"},
        orders=_seed000_orders("DG4", (115_000, 112_000, 118_000)),
        trades=(("tr1", "DG2", "L5"), ("tr2", "DG3", "L7"), ("tr3", "DG4", "L9")),
    ),
    Phase(
        key="select",
        title="Seller selection — IEEE 9-bus (seed 002 Table 5)",
        case="ieee9",
        regulators={1: "G1", 2: "G2", 3: "G3"},
        orders=(
            # G2 is the cheapest: price-only matching would pick it for both buyers
            OrderPlan("G1", "offer", 250_000, 52_000, 0, 3, post_min_before_start=40),
            OrderPlan("G2", "offer", 250_000, 40_000, 0, 3, post_min_before_start=40),
            OrderPlan("G3", "offer", 250_000, 46_000, 0, 3, post_min_before_start=40),
            OrderPlan("L7", "bid", 100_000, 60_000, 0, 3, label="tr1"),
            OrderPlan("L5", "bid", 125_000, 60_000, 1, 3, label="tr2"),
        ),
        trades=(("tr1", "?", "L7"), ("tr2", "?", "L5")),
        ranking_buyers=((7, 100_000), (5, 125_000)),
        ranking_sellers=(1, 2, 3),
    ),
)


@dataclass
class Timeline:
    """Block times of the phases: phase k's t1 is ``start_ms + k * phase_ms``."""

    start_ms: int
    phase_ms: int = 5 * SLOT_MS  # three trading slots, one for readings, one spare
    lead_ms: int = 60 * MIN_MS  # time before t1 of the first phase (registrations)
    phases: tuple[Phase, ...] = field(default=PHASES)

    def t1(self, index: int) -> int:
        return self.start_ms + self.lead_ms + index * self.phase_ms

    @property
    def genesis_ms(self) -> int:
        return self.start_ms

    @property
    def end_ms(self) -> int:
        return self.t1(len(self.phases))
