"""Allocation of network losses to trades: the Global method of seed 000 eq. 5.

    ΔP_{Gi,Li} = ΔP_tot · P^Δ_{Li} / L_tot

ΔP_tot: total active losses of the interval (with every running trade superposed); L_tot: total
load including the trades' increments; P^Δ_{Li}: the power the trade's buyer purchases. Losses
are shared pro rata to load, so a trade's share is its fraction of the load. What the trades do
not carry belongs to the rest of the load (``non_traded``), so the allocation always sums to
ΔP_tot exactly — nothing is lost and nothing is charged twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class LossAllocationError(ValueError):
    """Inputs that cannot be allocated (negative power, trades exceeding the load, ...)."""


@dataclass(frozen=True)
class LossAllocation:
    by_trade_kw: dict[str, float]
    non_traded_kw: float
    total_loss_kw: float
    total_load_kw: float

    def total_allocated_kw(self) -> float:
        return math.fsum(self.by_trade_kw.values()) + self.non_traded_kw


def global_method(
    total_loss_kw: float, total_load_kw: float, trade_power_kw: Mapping[str, float]
) -> LossAllocation:
    """Seed 000 eq. 5 for every trade running in the interval."""
    if not (math.isfinite(total_loss_kw) and total_loss_kw >= 0):
        raise LossAllocationError(f"total loss must be finite and >= 0 kW, got {total_loss_kw}")
    if not (math.isfinite(total_load_kw) and total_load_kw > 0):
        raise LossAllocationError(f"total load must be finite and > 0 kW, got {total_load_kw}")
    for trade, p in trade_power_kw.items():
        if not (math.isfinite(p) and p >= 0):
            raise LossAllocationError(f"trade {trade!r}: power must be finite and >= 0 kW, got {p}")
    traded = math.fsum(trade_power_kw.values())
    if traded > total_load_kw * (1 + 1e-12):
        raise LossAllocationError(
            f"trades buy {traded:g} kW but the whole load is only {total_load_kw:g} kW"
        )
    by_trade = {t: total_loss_kw * p / total_load_kw for t, p in trade_power_kw.items()}
    rest = total_loss_kw - math.fsum(by_trade.values())
    return LossAllocation(by_trade, rest, total_loss_kw, total_load_kw)


def loss_increment_kw(loss_with_trade_kw: float, loss_without_trade_kw: float) -> float:
    """Step 6 of the DSO (seed 000 §II.B): the change of losses the new trade causes (signed)."""
    return loss_with_trade_kw - loss_without_trade_kw
