"""Meters that post readings from a measured profile (a CSV file) instead of a simulation.

The CSV has a ``timestamp`` column (the start of each slot, ISO 8601 in UTC: ``...Z`` or
``...+00:00``) and one column per meter, named like the meter's key file (``keys/<name>.json``),
holding the meter's net energy for that slot in kWh: positive imported from the grid, negative
exported to it.  Rows must follow each other by exactly one market slot: a gap, a duplicate or
a step back is an error naming the line, and nothing is posted.

:class:`ProfileMeter` posts each slot's reading (``settlement.reading``, signed by the meter)
once the slot has ended in block time.  It resumes from the chain: the metering contract keeps
the end of each meter's last reading, so a restarted meter service skips what is on chain.
With a :class:`DetailStore`, each reading's detail (its samples and the meter's name) is stored
off chain first and the reading carries only its hash (``agents/meter_detail.py``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from gridledger.agents.client import ChainClient, must
from gridledger.agents.meter_detail import detail_bytes, detail_doc
from gridledger.chain.contracts.metering import meter_key
from gridledger.chain.keys import KeyPair
from gridledger.node.client import ClientError

WH_PER_KWH = 1000


class ProfileError(ValueError):
    """A profile that cannot be posted; the message names the file, line and column."""


@dataclass(frozen=True)
class Profile:
    slot_ms: int
    starts_ms: list[int]
    kwh: dict[str, list[float]]  # meter name -> one value per slot
    # with a finer resolution (``sample_ms``): meter name -> each slot's samples, which sum to
    # its value in ``kwh``; empty when the rows are slots
    samples_kwh: dict[str, list[list[float]]] = field(default_factory=dict)
    sample_ms: int = 0


def read_profile(path: str | Path, slot_ms: int, sample_ms: int | None = None) -> Profile:
    """Read and check a CSV profile (see the module docstring). With ``sample_ms`` (a divisor
    of the slot), rows are samples that step by it from a slot's start, and whole slots only."""
    if sample_ms is not None and (sample_ms <= 0 or slot_ms % sample_ms):
        raise ProfileError(f"samples of {sample_ms} ms do not divide the {slot_ms} ms slot")
    row_ms = sample_ms or slot_ms
    unit = "sample" if sample_ms else "slot"
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
        if start % (row_ms if starts else slot_ms):
            raise ProfileError(
                f"{p}:{line}: {row[0]} is not the start of a "
                f"{(row_ms if starts else slot_ms) // 1000} s {unit if starts else 'slot'}"
            )
        if starts:
            step = start - starts[-1]
            if step == 0:
                raise ProfileError(f"{p}:{line}: duplicate timestamp {row[0]}")
            if step < 0:
                raise ProfileError(f"{p}:{line}: {row[0]} goes back in time")
            if step != row_ms:
                missing = step // row_ms - 1
                raise ProfileError(
                    f"{p}:{line}: gap before {row[0]}: {missing} {unit}(s) of {row_ms // 1000} s "
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
    if sample_ms:
        return _slots_of_samples(p, slot_ms, sample_ms, starts, kwh)
    return Profile(slot_ms, starts, kwh)


def _slots_of_samples(
    p: Path, slot_ms: int, sample_ms: int, starts: list[int], kwh: dict[str, list[float]]
) -> Profile:
    per_slot = slot_ms // sample_ms
    if len(starts) % per_slot:
        raise ProfileError(
            f"{p}: the last slot has {len(starts) % per_slot} of its {per_slot} samples"
        )
    samples = {m: [v[i : i + per_slot] for i in range(0, len(v), per_slot)] for m, v in kwh.items()}
    # a slot's energy is the sum of its samples as posted (each rounded to Wh, see ProfileMeter)
    slots = {m: [sum(round(x * WH_PER_KWH) for x in s) / WH_PER_KWH for s in v]
             for m, v in samples.items()}  # fmt: skip
    return Profile(slot_ms, starts[::per_slot], slots, samples, sample_ms)


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


class DetailStore(Protocol):
    """Where a meter stores a reading's detail (``agents.meter_detail.NodeDetailStore``)."""

    def put(self, meter: KeyPair, data: bytes) -> str: ...


@dataclass
class ProfileMeter:
    name: str
    key: KeyPair
    starts_ms: list[int]
    kwh: list[float]
    slot_ms: int
    posted: list[str] = field(default_factory=list)
    # with a store, each reading's detail goes off chain and the reading carries its hash
    detail: DetailStore | None = None
    # one list of samples per slot (a finer profile, ``read_profile(sample_ms=)``): the detail
    # carries them, and the reading is their sum in Wh
    samples_kwh: list[list[float]] | None = None
    sample_ms: int = 0

    def step(self, client: ChainClient) -> int:
        """Post every ended slot not yet on chain; return how many were posted."""
        now = client.time_ms()
        on_chain = client.state(meter_key(self.key.pub_hex)) or {"end_ms": 0}
        n = 0
        for i, (start, value) in enumerate(zip(self.starts_ms, self.kwh, strict=True)):
            if start < on_chain["end_ms"] or start + self.slot_ms > now:
                continue
            samples_wh = self._samples_wh(i, value)
            wh = sum(samples_wh)
            payload = {
                "meter": self.key.pub_hex,
                "start_ms": start,
                "duration_s": self.slot_ms // 1000,
                "export_wh": max(-wh, 0),
                "import_wh": max(wh, 0),
            }
            if self.detail is not None:
                self._attach_detail(self.detail, payload, samples_wh)
            res = must(
                client.submit(self.key, "settlement.reading", payload),
                f"meter {self.name} reading for slot {start}",
            )
            self.posted.append(res.txid)
            on_chain = {"end_ms": start + self.slot_ms}
            n += 1
        return n

    def _samples_wh(self, slot: int, kwh: float) -> list[int]:
        if self.samples_kwh is None:  # a CSV row is one slot: one sample, the slot's energy
            return [round(kwh * WH_PER_KWH)]
        return [round(x * WH_PER_KWH) for x in self.samples_kwh[slot]]

    def _attach_detail(self, store: DetailStore, payload: dict, samples_wh: list[int]) -> None:
        sample_s = (self.sample_ms or self.slot_ms) // 1000
        doc = detail_doc(payload, self.name, samples_wh, sample_s)
        try:
            payload["detail_hash"] = store.put(self.key, detail_bytes(doc))
        except ClientError as exc:
            if exc.status != 410:
                raise
            # the subject erased this detail before its reading reached the chain (a restart
            # in between): the reading is still owed, without the detail it may not carry

    def done(self, client: ChainClient) -> bool:
        on_chain = client.state(meter_key(self.key.pub_hex)) or {"end_ms": 0}
        return on_chain["end_ms"] >= self.starts_ms[-1] + self.slot_ms
