"""Energy records in their own Merkle trees (seed 000 §II.B, Fig. 2).

- ``energy.transfer`` (active tree): source, destination, energy (Wh), start, duration and the
  power profile (W, equal steps). The energy must equal the profile's integral,
  ``sum(profile_w) * step_s // 3600``, so a record cannot contradict itself.
- ``energy.loss`` (loss tree): the losses attributed to a transfer over an interval (Wh).
- ``energy.reactive`` (reactive tree): time, node (bus) and reactive energy (varh) injected by a
  regulator node, optionally naming the member that provided it.

Only the DSO (the certifier, seed 004 §2.1) and ICT operators write these records.
State: ``etx/<txid>`` -> transfer summary; losses and reactive records live in blocks only.
"""

from __future__ import annotations

from typing import Any

from gridledger.chain import codes
from gridledger.chain.contracts.base import (
    Context,
    Contract,
    ContractError,
    PayloadError,
    TxType,
    req_hash,
    req_int,
    req_key,
    require_fields,
)
from gridledger.chain.contracts.membership import member_key

MAX_PROFILE_STEPS = 1440
MAX_POWER_W = 10**10
MAX_DURATION_S = 7 * 86400
MAX_BUS = 100_000
# DSO-only (issue 10): energy records are certified from the DSO's grid physics; the ICT
# operator runs the infrastructure and certifies nothing.
CERTIFIERS = frozenset({"dso"})


def _v_interval(p: dict[str, Any]) -> None:
    req_int(p, "start_ms", 0)
    req_int(p, "duration_s", 1, MAX_DURATION_S)


def _v_transfer(p: dict[str, Any]) -> None:
    require_fields(p, ["destination", "duration_s", "energy_wh", "profile_w", "source", "start_ms"])
    req_key(p, "source")
    req_key(p, "destination")
    if p["source"] == p["destination"]:
        raise PayloadError("source and destination must differ")
    _v_interval(p)
    prof = p["profile_w"]
    if not isinstance(prof, list) or not 1 <= len(prof) <= MAX_PROFILE_STEPS:
        raise PayloadError(f"profile_w must be a list of 1..{MAX_PROFILE_STEPS} integers")
    for w in prof:
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= MAX_POWER_W:
            raise PayloadError(f"profile_w entries must be integers in [0, {MAX_POWER_W}] W")
    if p["duration_s"] % len(prof):
        raise PayloadError("duration_s must divide evenly into the profile's steps")
    step_s = p["duration_s"] // len(prof)
    energy = req_int(p, "energy_wh", 0)
    expect = sum(prof) * step_s // 3600
    if energy != expect:
        raise PayloadError(f"energy_wh {energy} does not match the profile's integral {expect}")


def _x_transfer(ctx: Context, p: dict[str, Any]) -> None:
    for who in ("source", "destination"):
        if ctx.state.get_raw(member_key(p[who]).encode()) is None:
            raise ContractError(codes.NOT_FOUND, f"{who} {p[who][:16]}… is not a member")
    ctx.state.set(
        f"etx/{ctx.txid}",
        {
            "destination": p["destination"],
            "duration_s": p["duration_s"],
            "energy_wh": p["energy_wh"],
            "source": p["source"],
            "start_ms": p["start_ms"],
        },
    )
    ctx.emit(
        "energy.transfer",
        id=ctx.txid,
        source=p["source"],
        destination=p["destination"],
        energy_wh=p["energy_wh"],
    )


def _v_loss(p: dict[str, Any]) -> None:
    require_fields(p, ["duration_s", "loss_wh", "start_ms", "transfer"])
    req_hash(p, "transfer")
    _v_interval(p)
    req_int(p, "loss_wh", 0)


def _x_loss(ctx: Context, p: dict[str, Any]) -> None:
    if ctx.state.get_raw(f"etx/{p['transfer']}".encode()) is None:
        raise ContractError(codes.NOT_FOUND, f"no energy transfer {p['transfer'][:16]}…")
    ctx.emit("energy.loss", transfer=p["transfer"], loss_wh=p["loss_wh"])


def _v_reactive(p: dict[str, Any]) -> None:
    require_fields(p, ["bus", "duration_s", "q_varh", "start_ms"], ["provider"])
    req_int(p, "bus", 0, MAX_BUS)
    _v_interval(p)
    req_int(p, "q_varh", -(2**62), 2**62)
    if "provider" in p:
        req_key(p, "provider")


def _x_reactive(ctx: Context, p: dict[str, Any]) -> None:
    if "provider" in p and ctx.state.get_raw(member_key(p["provider"]).encode()) is None:
        raise ContractError(codes.NOT_FOUND, f"provider {p['provider'][:16]}… is not a member")
    ctx.emit("energy.reactive", bus=p["bus"], q_varh=p["q_varh"])


CONTRACT = Contract(
    "energy",
    (
        TxType(
            "energy.transfer",
            CERTIFIERS,
            _v_transfer,
            _x_transfer,
            tree="active",
            max_payload_bytes=24 * 1024,
        ),
        TxType("energy.loss", CERTIFIERS, _v_loss, _x_loss, tree="loss"),
        TxType("energy.reactive", CERTIFIERS, _v_reactive, _x_reactive, tree="reactive"),
    ),
)
