"""Signed meter readings (seed 001 S2, seed 004 §2.1 "certification of smart meter readings").

A reading is accepted only when signed by the meter's own key and the payload names that meter;
intervals of one meter never overlap or go back in time. The detailed profile (personal data,
seed 004 GDPR) stays in the node's off-chain store; the chain keeps only its SHA-256
(``detail_hash``), so erasing the detail leaves every block valid.

When the genesis parameter ``meter_tokens`` is true (default), readings drive the energy token
(seed 004 §3.4): exported Wh are minted to the meter's prosumer as ``ewh``; imported Wh burn
``ewh`` up to the prosumer's balance (the rest is reported as ``unbacked_wh`` for settlement).

State: ``meter/<meter hex>`` -> {"end_ms", "export_wh", "import_wh"} (last interval, totals).
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts import tokens
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    TxType,
    req_hash,
    req_int,
    req_key,
    require_fields,
)

# A meter's rating (W) is set when it is bound (member.bind_meter ``rating_w``); without one it
# is the largest connection gridledger models, 1 GW (a sub-transmission bulk supply point: the
# demo's seed-002 loads draw up to ~100 MW).  A reading's import, export and reactive energy
# are bounded by the rating over its interval, so one signed reading cannot report (and mint,
# and certify as green) more than its meter can physically see.
MAX_METER_RATING_W = 1_000_000_000


def meter_key(meter_pub_hex: str) -> str:
    """A meter's last reading (its window and energies): readings may not overlap."""
    return f"meter/{meter_pub_hex}"


def max_energy_wh(rating_w: int, duration_s: int) -> int:
    """The most energy (Wh, or varh) a meter of ``rating_w`` sees in ``duration_s`` seconds."""
    return rating_w * duration_s // 3600


def _v_reading(p: dict[str, Any]) -> None:
    require_fields(
        p, ["duration_s", "export_wh", "import_wh", "meter", "start_ms"], ["detail_hash", "q_varh"]
    )
    req_key(p, "meter")
    req_int(p, "start_ms", 0)
    duration_s = req_int(p, "duration_s", 1, 86400)
    rated = max_energy_wh(MAX_METER_RATING_W, duration_s)
    req_int(p, "import_wh", 0, rated)
    req_int(p, "export_wh", 0, rated)
    if "q_varh" in p:
        req_int(p, "q_varh", -rated, rated)
    if "detail_hash" in p:
        req_hash(p, "detail_hash")


def meter_prosumer(ctx: Context) -> str:
    """The prosumer the sending meter is bound to; a meter bound to none posts no readings."""
    prosumer = ctx.sender_member.get("prosumer")
    if not prosumer:
        raise ContractError(codes.UNAUTHORIZED, "meter is not bound to a prosumer")
    return prosumer


def _x_reading(ctx: Context, p: dict[str, Any]) -> None:
    if p["meter"] != ctx.sender:
        raise ContractError(
            codes.UNAUTHORIZED,
            f"reading for meter {p['meter'][:16]}… signed by "
            f"{ctx.sender[:16]}…, which is not that meter's key",
        )
    prosumer = meter_prosumer(ctx)
    rating_w = ctx.sender_member.get("rating_w", MAX_METER_RATING_W)
    rated = max_energy_wh(rating_w, p["duration_s"])
    for name in ("import_wh", "export_wh", "q_varh"):
        if abs(p.get(name, 0)) > rated:
            raise ContractError(
                codes.INVALID_PAYLOAD,
                f"{name} {p[name]} exceeds what a meter rated {rating_w} W "
                f"sees in {p['duration_s']} s ({rated})",
            )
    key = meter_key(p["meter"])
    last = ctx.state.get(key) or {"end_ms": 0, "export_wh": 0, "import_wh": 0}
    if p["start_ms"] < last["end_ms"]:
        raise ContractError(
            codes.INVALID_PAYLOAD,
            f"reading starts at {p['start_ms']} before the "
            f"end of the previous one ({last['end_ms']})",
        )
    end_ms = p["start_ms"] + 1000 * p["duration_s"]
    ctx.state.set(
        key,
        {
            "end_ms": end_ms,
            "export_wh": last["export_wh"] + p["export_wh"],
            "import_wh": last["import_wh"] + p["import_wh"],
        },
    )
    if ctx.params.get("meter_tokens", True):
        if p["export_wh"]:
            tokens.mint(ctx, "ewh", prosumer, p["export_wh"])
        burned = min(p["import_wh"], tokens.balance(ctx, "ewh", prosumer))
        if burned:
            tokens.burn(ctx, "ewh", prosumer, burned)
        ctx.emit(
            "meter.tokens",
            prosumer=prosumer,
            minted_wh=p["export_wh"],
            burned_wh=burned,
            unbacked_wh=p["import_wh"] - burned,
        )
    ctx.emit(
        "meter.reading",
        meter=p["meter"],
        prosumer=prosumer,
        start_ms=p["start_ms"],
        end_ms=end_ms,
        detail_hash=p.get("detail_hash", ""),
    )


CONTRACT = Contract(
    "metering",
    (TxType("meter.reading", frozenset({"meter"}), _v_reading, _x_reading),),
)
