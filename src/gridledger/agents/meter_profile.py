"""Meters that post readings from a measured profile (a CSV file) instead of a simulation.

The CSV has a ``timestamp`` column (the start of each slot, ISO 8601 in UTC: ``...Z`` or
``...+00:00``) and one column per meter, named like the meter's key file (``keys/<name>.json``),
holding the meter's net energy for that slot in kWh: positive imported from the grid, negative
exported to it.  Rows must follow each other by exactly one market slot: a gap, a duplicate or
a step back is an error naming the line, and nothing is posted.

:class:`ProfileMeter` posts each slot's reading (``settlement.reading``, signed by the meter)
once the slot has ended in block time.  It resumes from the chain: the metering contract keeps
the end of each meter's last reading, so a restarted meter service skips what is on chain.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gridledger.agents.client import ChainClient, must
from gridledger.chain.contracts.metering import meter_key
from gridledger.chain.keys import KeyPair

WH_PER_KWH = 1000


class ProfileError(ValueError):
    """A profile that cannot be posted; the message names the file, line and column."""


@dataclass(frozen=True)
class Profile:
    slot_ms: int
    starts_ms: list[int]
    kwh: dict[str, list[float]]  # meter name -> one value per slot


def read_profile(path: str | Path, slot_ms: int) -> Profile:
    """Read and check a CSV profile (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"no profile file {p}")
    with p.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0] or rows[0][0].strip() != "timestamp":
        raise ProfileError(f"{p}: the first column must be 'timestamp'")
    meters = [m.strip() for m in rows[0][1:]]
    if not meters or any(not m for m in meters) or len(set(meters)) != len(meters):
        raise ProfileError(f"{p}: need one named column per meter, each name once; got {meters}")
    starts: list[int] = []
    kwh: dict[str, list[float]] = {m: [] for m in meters}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(meters) + 1:
            raise ProfileError(f"{p}:{line}: {len(row)} fields, expected {len(meters) + 1}")
        start = _utc_ms(row[0], f"{p}:{line}")
        if start % slot_ms:
            raise ProfileError(
                f"{p}:{line}: {row[0]} is not the start of a {slot_ms // 1000} s slot"
            )
        if starts:
            step = start - starts[-1]
            if step == 0:
                raise ProfileError(f"{p}:{line}: duplicate timestamp {row[0]}")
            if step < 0:
                raise ProfileError(f"{p}:{line}: {row[0]} goes back in time")
            if step != slot_ms:
                missing = step // slot_ms - 1
                raise ProfileError(
                    f"{p}:{line}: gap before {row[0]}: {missing} slot(s) of {slot_ms // 1000} s "
                    "missing"
                )
        starts.append(start)
        for meter, cell in zip(meters, row[1:], strict=True):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ProfileError(f"{p}:{line}: {meter}: {cell!r} is not a number of kWh")
            kwh[meter].append(value)
    if not starts:
        raise ProfileError(f"{p}: no readings")
    return Profile(slot_ms, starts, kwh)


def utc_ms(text: str, where: str) -> int:
    """An ISO 8601 UTC timestamp (``...Z`` or ``+00:00``) in ms; ``where`` names it in errors."""
    return _utc_ms(text, where)


def _utc_ms(text: str, where: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ProfileError(f"{where}: {text!r} is not an ISO 8601 timestamp") from None
    if dt.utcoffset() is None or dt.utcoffset().total_seconds() != 0:
        raise ProfileError(f"{where}: {text!r} must be in UTC (end it with Z)")
    return round(dt.astimezone(UTC).timestamp() * 1000)


@dataclass
class ProfileMeter:
    name: str
    key: KeyPair
    starts_ms: list[int]
    kwh: list[float]
    slot_ms: int
    posted: list[str] = field(default_factory=list)

    def step(self, client: ChainClient) -> int:
        """Post every ended slot not yet on chain; return how many were posted."""
        now = client.time_ms()
        on_chain = client.state(meter_key(self.key.pub_hex)) or {"end_ms": 0}
        n = 0
        for start, value in zip(self.starts_ms, self.kwh, strict=True):
            if start < on_chain["end_ms"] or start + self.slot_ms > now:
                continue
            wh = round(value * WH_PER_KWH)
            payload = {
                "meter": self.key.pub_hex,
                "start_ms": start,
                "duration_s": self.slot_ms // 1000,
                "export_wh": max(-wh, 0),
                "import_wh": max(wh, 0),
            }
            res = must(
                client.submit(self.key, "settlement.reading", payload),
                f"meter {self.name} reading for slot {start}",
            )
            self.posted.append(res.txid)
            on_chain = {"end_ms": start + self.slot_ms}
            n += 1
        return n

    def done(self, client: ChainClient) -> bool:
        on_chain = client.state(meter_key(self.key.pub_hex)) or {"end_ms": 0}
        return on_chain["end_ms"] >= self.starts_ms[-1] + self.slot_ms
