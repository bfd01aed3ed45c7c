"""Settlement rules for one approved match in one market slot (integers only).

What a slot of a trade settles, given the schedule, the meter readings and the DSO's
certificate (seed 001's billing contract S2; seed 004 §3.4 for the energy tokens):

* delivered energy = min(scheduled, metered injection, metered consumption), all allocated to
  this match; the buyer pays the seller ``delivered × price`` (the energy payment);
* the match's loss share (certificate, seed 000 eq. 5) is charged at the trade price and paid
  to the DSO, who buys the losses; by default the buyer pays all of it, ``loss_buyer_share_ppm``
  splits it with the seller;
* regulator nodes get the reactive-power remuneration the certificate assigns to this match
  (opportunity cost, seed 000 eqs. 7–8), paid by the buyer;
* a deviation of injection (seller) or consumption (buyer) from the schedule beyond a tolerance
  is penalized at ``penalty_ppm`` of the trade price per Wh, paid to the DSO.

Payments never make a balance negative: :func:`pay_capped` pays what is there and records the
rest as a shortfall.  Amounts are floored, so nobody is ever charged a fraction of a utoken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gridledger.market.orders import PPM, WH_PER_KWH, OrderError, cost_utoken, energy_wh

BUYER = "buyer"
SELLER = "seller"
DSO = "dso"
REGULATOR_PREFIX = "regulator:"


@dataclass(frozen=True)
class SettlementParams:
    loss_buyer_share_ppm: int = PPM  # buyer pays all of the loss share unless configured
    penalty_ppm: int = 200_000  # penalty per Wh of deviation, as a share of the trade price
    tolerance_ppm: int = 50_000  # deviations within 5 % of the schedule are not penalized

    def __post_init__(self) -> None:
        for name in ("loss_buyer_share_ppm", "tolerance_ppm"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= PPM:
                raise OrderError(f"{name} must be an integer in [0, {PPM}], got {v!r}")
        if not isinstance(self.penalty_ppm, int) or not 0 <= self.penalty_ppm <= 10 * PPM:
            raise OrderError(f"penalty_ppm must be an integer in [0, {10 * PPM}]")


@dataclass(frozen=True)
class Transfer:
    """One money movement of a settlement, between roles of the trade."""

    payer: str  # "buyer" | "seller"
    payee: str  # "seller" | "dso" | "regulator:<node>"
    amount_utoken: int
    kind: str  # "energy" | "loss" | "reactive" | "penalty"


@dataclass(frozen=True)
class SlotSettlement:
    scheduled_wh: int
    injected_wh: int
    consumed_wh: int
    delivered_wh: int
    loss_wh: int
    price_utoken_per_kwh: int
    transfers: tuple[Transfer, ...]


def allocate_pro_rata(total: int, weights: Sequence[int]) -> list[int]:
    """Split a non-negative integer in proportion to weights, exactly (largest remainder; ties
    to the earlier weight).  All-zero weights give everything to nobody: zeros."""
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("allocate_pro_rata needs non-negative total and weights")
    wsum = sum(weights)
    if wsum == 0:
        return [0] * len(weights)
    shares = [total * w // wsum for w in weights]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
    for i in order[:rest]:
        shares[i] += 1
    return shares


def penalty_utoken(deviation_wh: int, price_utoken_per_kwh: int, penalty_ppm: int) -> int:
    return deviation_wh * price_utoken_per_kwh * penalty_ppm // (WH_PER_KWH * PPM)


def settle_slot(
    *,
    scheduled_wh: int,
    injected_wh: int,
    consumed_wh: int,
    price_utoken_per_kwh: int,
    loss_w: int,
    slot_ms: int,
    reactive_utoken: Sequence[tuple[int, int]] = (),
    params: SettlementParams | None = None,
) -> SlotSettlement:
    """Money owed for one slot of one match.  ``reactive_utoken`` lists (regulator node,
    amount) for this slot.  Inputs are integers >= 0 (loss may not be negative: a trade that
    reduces losses is charged nothing, not paid)."""
    p = params or SettlementParams()
    for name, v in (
        ("scheduled_wh", scheduled_wh),
        ("injected_wh", injected_wh),
        ("consumed_wh", consumed_wh),
        ("price_utoken_per_kwh", price_utoken_per_kwh),
        ("slot_ms", slot_ms),
    ):
        if not isinstance(v, int) or v < 0:
            raise OrderError(f"{name} must be a non-negative integer, got {v!r}")
    delivered_wh = min(scheduled_wh, injected_wh, consumed_wh)
    loss_wh = energy_wh(max(loss_w, 0), slot_ms)
    transfers: list[Transfer] = []

    def add(payer: str, payee: str, amount: int, kind: str) -> None:
        if amount > 0:
            transfers.append(Transfer(payer, payee, amount, kind))

    add(BUYER, SELLER, cost_utoken(delivered_wh, price_utoken_per_kwh), "energy")
    loss_utoken = cost_utoken(loss_wh, price_utoken_per_kwh)
    buyer_loss = loss_utoken * p.loss_buyer_share_ppm // PPM
    add(BUYER, DSO, buyer_loss, "loss")
    add(SELLER, DSO, loss_utoken - buyer_loss, "loss")
    for node, amount in reactive_utoken:
        if amount < 0:
            raise OrderError(f"reactive remuneration for node {node} is negative")
        add(BUYER, f"{REGULATOR_PREFIX}{node}", amount, "reactive")
    tolerance_wh = scheduled_wh * p.tolerance_ppm // PPM
    seller_dev = max(0, abs(injected_wh - scheduled_wh) - tolerance_wh)
    buyer_dev = max(0, abs(consumed_wh - scheduled_wh) - tolerance_wh)
    add(SELLER, DSO, penalty_utoken(seller_dev, price_utoken_per_kwh, p.penalty_ppm), "penalty")
    add(BUYER, DSO, penalty_utoken(buyer_dev, price_utoken_per_kwh, p.penalty_ppm), "penalty")
    return SlotSettlement(
        scheduled_wh,
        injected_wh,
        consumed_wh,
        delivered_wh,
        loss_wh,
        price_utoken_per_kwh,
        tuple(transfers),
    )


def pay_capped(available_utoken: int, amount_utoken: int) -> tuple[int, int]:
    """(paid, shortfall): pay as much as the payer has, never more."""
    paid = max(0, min(available_utoken, amount_utoken))
    return paid, amount_utoken - paid


def reactive_for_slot(remuneration_utoken_per_h: int, slot_ms: int) -> int:
    """A regulator's remuneration rate (utoken per hour) over one slot, floored."""
    return remuneration_utoken_per_h * slot_ms // 3_600_000
