"""Smart-meter simulator: one signed reading per market slot once the slot has ended.

The simulated meter measures the traded flow at its prosumer's bus: for each slot it reads the
approved trades on chain (the schedule), adds a deviation drawn uniformly from
``[-deviation_ppm, +deviation_ppm]`` of the schedule (a seeded generator, so runs repeat), and
posts ``settlement.reading`` signed with its own key.  A deviation beyond the market's
tolerance is penalized by the settlement contract.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gridledger.agents.client import ChainClient, must
from gridledger.chain.contracts.market import match_key, slot_matches_key
from gridledger.chain.keys import KeyPair
from gridledger.market.orders import energy_wh, power_at

PPM = 1_000_000


def scheduled_wh(
    client: ChainClient, prosumer: str, slot_start_ms: int, slot_ms: int
) -> tuple[int, int]:
    """(export, import) the approved trades of a prosumer schedule for one slot, in Wh."""
    export = import_ = 0
    for mid in client.state(slot_matches_key(slot_start_ms)) or []:
        rec = client.state(match_key(mid))
        if rec is None or rec["status"] not in ("approved", "settled"):
            continue
        m = rec["match"]
        e = energy_wh(power_at(m, slot_start_ms, slot_ms), slot_ms)  # a profile's slot entry
        if m["seller"] == prosumer:
            export += e
        if m["buyer"] == prosumer:
            import_ += e
    return export, import_


@dataclass
class MeterSim:
    name: str
    key: KeyPair
    prosumer: str  # hex public key of the prosumer the meter is bound to
    first_slot_ms: int
    last_slot_ms: int  # exclusive: the meter stops reading here
    slot_ms: int = 900_000
    deviation_ppm: int = 0
    seed: int = 0
    next_slot_ms: int = field(init=False)
    readings: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next_slot_ms = self.first_slot_ms
        self._rng = random.Random(self.seed)

    def _deviate(self, wh: int) -> int:
        if not wh or not self.deviation_ppm:
            return wh
        ppm = self._rng.randint(-self.deviation_ppm, self.deviation_ppm)
        return max(0, wh + wh * ppm // PPM)

    def step(self, client: ChainClient) -> int:
        """Post the readings of every slot that has ended; return how many were posted."""
        now = client.time_ms()
        posted = 0
        while self.next_slot_ms < self.last_slot_ms and self.next_slot_ms + self.slot_ms <= now:
            s = self.next_slot_ms
            exp, imp = scheduled_wh(client, self.prosumer, s, self.slot_ms)
            payload = {
                "meter": self.key.pub_hex,
                "start_ms": s,
                "duration_s": self.slot_ms // 1000,
                "export_wh": self._deviate(exp),
                "import_wh": self._deviate(imp),
            }
            res = must(
                client.submit(self.key, "settlement.reading", payload),
                f"meter {self.name} reading for slot {s}",
            )
            self.readings.append(
                {**payload, "tx": res.txid, "scheduled_export_wh": exp, "scheduled_import_wh": imp}
            )
            self.next_slot_ms += self.slot_ms
            posted += 1
        return posted

    @property
    def done(self) -> bool:
        return self.next_slot_ms >= self.last_slot_ms
