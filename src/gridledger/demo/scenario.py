"""The demo's market, built from the shipped scenarios (one source of truth for the trades).

Three phases on one chain, each one hour and a quarter of market time: the scenario's instants
t1 < t2 < ... become consecutive 15-minute slots, then a slot for the last readings and a spare.

* ``seed000_case1`` (seed 000 §VI, grid-connected): tr1 DG2 -> L5 300 kW over t1–t4, tr2 DG3 ->
  L7 200 kW over t2–t4, tr3 bus 1 -> L9 250 kW over t3–t4.  Each seller offers exactly its trade
  when the buyer bids, ten minutes before the trade starts, so the book pairs them as in the
  paper (Fig. 3's overlapping trades).
* ``seed000_case2``: the same trades on the islanded microgrid.
* ``seed002_ieee9`` (seed 002 §6): every candidate generator offers; before each buyer bids the
  DSO publishes its ranking (loss increase, excluded sellers: Table 5) and the market gives the
  buyer the seller the ranking prefers, although a cheaper one is on offer.

Parties are the prosumers at the buses; prices are in utoken per kWh (1 token = 10^6 utoken).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from gridledger.market.scenario import Scenario, load_scenario

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
    label: str = ""


MICROGRID_PARTIES = (
    Party("B1", 1, 10**9),  # the supply at bus 1: the main grid in CASE 1, a PV plant in CASE 2
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
SELLERS = {
    "microgrid9": {1: "B1", 2: "DG2", 3: "DG3", 4: "DG4"},
    "microgrid9-islanded": {1: "B1", 2: "DG2", 3: "DG3", 4: "DG4"},
    "ieee9": {1: "G1", 2: "G2", 3: "G3"},
}
BUYERS = {5: "L5", 7: "L7", 9: "L9"}
# seed 002 selection: G2 is the cheapest, so price alone would pick it
SELECTION_PRICES = {1: 52_000, 2: 40_000, 3: 46_000}
BID_MARGIN_PPM = 200_000  # buyers accept up to 20 % above the scenario's energy price


@dataclass(frozen=True)
class Phase:
    key: str
    title: str
    scenario_name: str

    @cached_property
    def scenario(self) -> Scenario:
        return load_scenario(self.scenario_name)

    @property
    def case(self) -> str:
        return self.scenario.case

    def instants(self) -> list[int]:
        s = self.scenario
        return sorted(
            {t.start_ms for t in s.trades}
            | {t.end_ms for t in s.trades}
            | {r.at_ms for r in s.ranking}
        )

    def slot_of(self, t_ms: int) -> int:
        return self.instants().index(t_ms)

    @property
    def n_slots(self) -> int:
        return len(self.instants()) - 1

    def seller_bus(self, seller: str) -> int:
        if seller.startswith("bus "):
            return int(seller.split()[1])
        from gridledger.grid.cases import load_case

        gen = load_case(self.case).gen
        return int(gen.bus[gen["name"] == seller].iloc[0])

    def orders(self) -> list[OrderPlan]:
        s = self.scenario
        price = s.price_utoken_per_kwh
        cap = price + price * BID_MARGIN_PPM // 1_000_000
        out = []
        if s.ranking:  # seed 002: the candidates offer for the whole phase, buyers bid
            buses = sorted({int(c.split()[1]) for r in s.ranking for c in r.candidates})
            power = max(r.power_kw for r in s.ranking)
            for b in buses:
                out.append(
                    OrderPlan(
                        SELLERS[self.case][b],
                        "offer",
                        power,
                        SELECTION_PRICES[b],
                        0,
                        self.n_slots,
                        post_min_before_start=40,
                    )
                )
            for t in s.trades:
                out.append(
                    OrderPlan(
                        BUYERS[t.buyer_bus],
                        "bid",
                        t.power_kw,
                        max(SELECTION_PRICES.values()) + 10_000,
                        self.slot_of(t.start_ms),
                        self.slot_of(t.end_ms),
                        label=t.id,
                    )
                )
            return out
        for t in s.trades:
            start, end = self.slot_of(t.start_ms), self.slot_of(t.end_ms)
            seller = SELLERS[self.case][self.seller_bus(t.seller)]
            out.append(OrderPlan(seller, "offer", t.power_kw, price, start, end, label=t.id))
            out.append(
                OrderPlan(BUYERS[t.buyer_bus], "bid", t.power_kw, cap, start, end, label=t.id)
            )
        return out

    def regulators(self, regulator_buses: dict[int, str]) -> dict[int, str]:
        """Bus -> party paid for reactive support."""
        return {b: SELLERS[self.case][b] for b in regulator_buses if b in SELLERS[self.case]}


PHASES = (
    Phase("case1", "CASE 1 — grid-connected microgrid (seed 000 Table III)", "seed000_case1"),
    Phase("case2", "CASE 2 — islanded microgrid (seed 000 Table III)", "seed000_case2"),
    Phase("select", "Seller selection — IEEE 9-bus (seed 002 Table 5)", "seed002_ieee9"),
)


@dataclass
class Timeline:
    """Block times of the phases: phase k's t1 is ``start_ms + lead_ms + k * phase_ms``."""

    start_ms: int
    phase_ms: int = 5 * SLOT_MS  # up to three trading slots, one for readings, one spare
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
