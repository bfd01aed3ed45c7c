"""Offers, bids and the integer arithmetic of energy and money (commercial layer, no chain).

An offer is what a generator's owner posts (seed 000 Fig. 8a): the bus it injects at, the active
power it makes available, the reactive regulation capacity it puts at the DSO's disposal, a price
and a delivery window.  A bid is a buyer's order: bus, power, window and the highest price it
accepts.  Windows are aligned to market slots (15 minutes by default) so that every slot of a
window is fully covered and energies are exact multiples of a slot's energy.

An order may carry a power profile (``profile_w``): one power per slot of its window, in W, for
example a PV seller's midday shape (seed 000's trade record carries a power profile).  Its
``power_w`` is then the profile's peak.  An order without a profile is a constant power and is
encoded exactly as before profiles existed (the field is absent, never null).

Units: power in W, reactive power in var, energy in Wh, money in micro-tokens (utoken), prices in
utoken per kWh, times in integer milliseconds since the Unix epoch (block time).  No floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

MS_PER_HOUR = 3_600_000
WH_PER_KWH = 1_000
PPM = 1_000_000
DEFAULT_SLOT_MS = 900_000  # 15 minutes: the ecosystem's settlement interval
# Bounds keep every product below 2**63 so state stays portable to fixed-width stores.
MAX_POWER_W = 10**10  # 10 GW
MAX_PRICE_UTOKEN_PER_KWH = 10**12
MAX_WINDOW_MS = 7 * 24 * MS_PER_HOUR
# A profile holds at most one entry per slot of the longest window the market allows (24 h of
# 15-minute slots); the chain also requires exactly one entry per slot of the order's window.
MAX_PROFILE_SLOTS = 96


class OrderError(ValueError):
    """An order that breaks a market rule; the message names the field and what was expected."""


def energy_wh(power_w: int, duration_ms: int) -> int:
    """Energy of a constant power over a duration, floored to whole Wh."""
    return power_w * duration_ms // MS_PER_HOUR


def cost_utoken(energy_wh_: int, price_utoken_per_kwh: int) -> int:
    """Money for an energy at a price, floored to whole utoken (the payer never pays a fraction)."""
    return energy_wh_ * price_utoken_per_kwh // WH_PER_KWH


def slots_of(start_ms: int, end_ms: int, slot_ms: int) -> list[int]:
    """Start times of the market slots that make up the window [start_ms, end_ms)."""
    return list(range(start_ms, end_ms, slot_ms))


def power_at(record: Mapping[str, Any], slot_start_ms: int, slot_ms: int) -> int:
    """The power in W of an order or match (its plain record) in the slot starting at
    ``slot_start_ms``: its profile's entry for that slot, or its constant ``power_w``."""
    profile = record.get("profile_w")
    power_w: int = (
        record["power_w"]
        if profile is None
        else profile[(slot_start_ms - record["start_ms"]) // slot_ms]
    )
    return power_w


def scheduled_energy_wh(record: Mapping[str, Any], slot_ms: int) -> int:
    """The energy of an order or match over its window: each slot's energy, floored, summed for
    a profile; the constant power over the whole window otherwise (as before profiles)."""
    profile = record.get("profile_w")
    if profile is None:
        return energy_wh(record["power_w"], record["end_ms"] - record["start_ms"])
    return sum(energy_wh(w, slot_ms) for w in profile)


def _profile(
    data: Mapping[str, Any], power_w: int, start_ms: int, end_ms: int, slot_ms: int | None
) -> tuple[int, ...] | None:
    """The optional per-slot profile: a list of integer W, one per slot of the window (checked
    when the slot length is known), at most MAX_PROFILE_SLOTS, peak equal to ``power_w``."""
    if "profile_w" not in data:
        return None
    profile = data["profile_w"]
    if not isinstance(profile, list) or not 1 <= len(profile) <= MAX_PROFILE_SLOTS:
        raise OrderError(f"profile_w must be a list of 1..{MAX_PROFILE_SLOTS} powers in W")
    for i, w in enumerate(profile):
        if not isinstance(w, int) or isinstance(w, bool):
            raise OrderError(f"profile_w[{i}] must be an integer W, got {type(w).__name__}")
        if not 0 <= w <= MAX_POWER_W:
            raise OrderError(f"profile_w[{i}] must be in [0, {MAX_POWER_W}] W, got {w}")
    if max(profile) != power_w:
        raise OrderError(
            f"power_w {power_w} must equal the profile's peak {max(profile)} (profile_w)"
        )
    if slot_ms is not None and len(profile) != (end_ms - start_ms) // slot_ms:
        raise OrderError(
            f"profile_w has {len(profile)} entries; the window [{start_ms}, {end_ms}) has "
            f"{(end_ms - start_ms) // slot_ms} slots of {slot_ms} ms (one entry per slot)"
        )
    return tuple(profile)


def _plain(order: Any) -> dict[str, Any]:
    """An order as plain data; no ``profile_w`` key when it has none (the old encoding)."""
    d = asdict(order)
    if d.get("profile_w") is None:
        d.pop("profile_w", None)
    else:
        d["profile_w"] = list(d["profile_w"])
    return d


def _int_field(data: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    if name not in data:
        raise OrderError(f"missing field {name!r}")
    value = data[name]
    # bool is an int subclass; a True power is a bug, not one watt
    if not isinstance(value, int) or isinstance(value, bool):
        raise OrderError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise OrderError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _window(data: Mapping[str, Any], slot_ms: int | None) -> tuple[int, int]:
    start_ms = _int_field(data, "start_ms", 0, 2**53)
    end_ms = _int_field(data, "end_ms", 0, 2**53)
    if end_ms <= start_ms:
        raise OrderError(f"window end_ms {end_ms} must be after start_ms {start_ms}")
    if end_ms - start_ms > MAX_WINDOW_MS:
        raise OrderError(f"window longer than {MAX_WINDOW_MS} ms")
    if slot_ms is not None and (start_ms % slot_ms or end_ms % slot_ms):
        raise OrderError(f"window [{start_ms}, {end_ms}) must be aligned to {slot_ms} ms slots")
    return start_ms, end_ms


@dataclass(frozen=True)
class Offer:
    """A seller's signed offer (seed 000 Fig. 8a)."""

    offer_id: str
    seller: str
    node: int
    power_w: int
    regulation_var: int
    price_utoken_per_kwh: int
    start_ms: int
    end_ms: int
    green: bool = False
    profile_w: tuple[int, ...] | None = None  # W per slot of the window; power_w is its peak

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class Bid:
    """A buyer's signed bid."""

    bid_id: str
    buyer: str
    node: int
    power_w: int
    max_price_utoken_per_kwh: int
    start_ms: int
    end_ms: int
    profile_w: tuple[int, ...] | None = None  # W per slot of the window; power_w is its peak

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    def max_cost_utoken(self, slot_ms: int = DEFAULT_SLOT_MS) -> int:
        """The most the bid can cost at its own price: what must be escrowed when it is posted
        (for a profile, the energy of its slots, each floored as settlement floors it)."""
        energy = scheduled_energy_wh(self.to_dict(), slot_ms)
        return cost_utoken(energy, self.max_price_utoken_per_kwh)


def parse_offer(
    data: Mapping[str, Any], *, offer_id: str, seller: str, slot_ms: int | None = DEFAULT_SLOT_MS
) -> Offer:
    """Validate an offer payload; raise :class:`OrderError` naming the first bad field.  With
    ``slot_ms`` None (the slot length not known yet) slot alignment is not checked."""
    node = _int_field(data, "node", 0, 10**9)
    power_w = _int_field(data, "power_w", 1, MAX_POWER_W)
    regulation_var = _int_field(data, "regulation_var", 0, MAX_POWER_W)
    price = _int_field(data, "price_utoken_per_kwh", 0, MAX_PRICE_UTOKEN_PER_KWH)
    start_ms, end_ms = _window(data, slot_ms)
    green = data.get("green", False)
    if not isinstance(green, bool):
        raise OrderError("green must be true or false")
    profile = _profile(data, power_w, start_ms, end_ms, slot_ms)
    return Offer(
        offer_id,
        seller,
        node,
        power_w,
        regulation_var,
        price,
        start_ms,
        end_ms,
        green=green,
        profile_w=profile,
    )


def parse_bid(
    data: Mapping[str, Any], *, bid_id: str, buyer: str, slot_ms: int | None = DEFAULT_SLOT_MS
) -> Bid:
    """Validate a bid payload; raise :class:`OrderError` naming the first bad field."""
    node = _int_field(data, "node", 0, 10**9)
    power_w = _int_field(data, "power_w", 1, MAX_POWER_W)
    price = _int_field(data, "max_price_utoken_per_kwh", 0, MAX_PRICE_UTOKEN_PER_KWH)
    start_ms, end_ms = _window(data, slot_ms)
    profile = _profile(data, power_w, start_ms, end_ms, slot_ms)
    return Bid(bid_id, buyer, node, power_w, price, start_ms, end_ms, profile_w=profile)


def _from_dict(cls: Any, data: Mapping[str, Any]) -> Any:
    fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "profile_w"}
    profile = data.get("profile_w")
    return cls(**fields, profile_w=None if profile is None else tuple(profile))


def offer_from_dict(data: Mapping[str, Any]) -> Offer:
    offer: Offer = _from_dict(Offer, data)
    return offer


def bid_from_dict(data: Mapping[str, Any]) -> Bid:
    bid: Bid = _from_dict(Bid, data)
    return bid


__all__ = [
    "DEFAULT_SLOT_MS",
    "MAX_PROFILE_SLOTS",
    "PPM",
    "Bid",
    "Offer",
    "OrderError",
    "bid_from_dict",
    "cost_utoken",
    "energy_wh",
    "offer_from_dict",
    "parse_bid",
    "parse_offer",
    "power_at",
    "scheduled_energy_wh",
    "slots_of",
]
