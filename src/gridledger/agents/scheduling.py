"""A day-ahead schedule as a library call: centralized, by ADMM off chain, or with the
aggregator as a contract and DER agents as processes (seed 001). ``gridledger schedule`` is a
thin wrapper over :func:`run_schedule`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gridledger.chain.contracts.aggregator import round_key

RELAXATION_EXACT_TOL = 1e-3  # relative |ℓ·v − P² − Q²| (see grid.distflow.relaxation_gap)


class ScheduleRequestError(ValueError):
    """A request that cannot be run: bad combination, unknown feeder, infeasible problem."""


@dataclass(frozen=True)
class ScheduleRequest:
    case: str  # sce56 | case33bw | case[:k]
    method: Literal["central", "admm"] = "admm"
    on_chain: bool = False  # the aggregator as a contract (S1)
    validators: int = 1  # 1: solo node; N > 1: a BFT testnet (with on_chain)
    agent_processes: int = 2
    max_iter: int = 100
    rho: float | None = None
    clusters: int = 0  # agents for K connected groups of nodes instead of one per node
    home: Path | None = None  # keep the chain here (default: a temporary directory)


def _dispatch_stats(feeder: Any, p_mw: Any, ran: Any) -> dict[str, Any]:
    from gridledger.grid.dispatch import marginal_prices_usd_per_mwh

    prices = None
    if feeder.ders[0].generator is not None:
        prices = _dlmp_stats(marginal_prices_usd_per_mwh(feeder, p_mw, ran))
    return {
        "marginal_price": prices,
        "feasible": bool(ran.feasible),
        "voltage_violation_pu": float(ran.voltage_violation_pu),
        "generator_violation_mw": float(ran.generator_violation_mw),
        "root_vm_pu": {
            "min": round(float(ran.root_vm_pu.min()), 6),
            "max": round(float(ran.root_vm_pu.max()), 6),
        },
        "max_slack_mismatch_mw": float(abs(ran.slack_mismatch_mw).max()),
        "loss_mwh": round(float(ran.loss_mw.sum()), 6),
    }


def _dlmp_stats(dlmp) -> dict[str, float]:
    return {
        "min": round(float(dlmp.min()), 4),
        "max": round(float(dlmp.max()), 4),
        "root": round(float(dlmp[0].mean()), 4),
    }


def run_schedule(req: ScheduleRequest) -> dict[str, Any]:
    """Solve ``req`` and report it as ``gridledger schedule --json`` prints it."""
    import numpy as np

    from gridledger.grid.der import DerSpecError
    from gridledger.grid.dispatch import DispatchError, dispatch
    from gridledger.grid.distflow import ScheduleError, solve_central
    from gridledger.grid.feeders import FeederError, load_feeder

    if req.validators < 1:
        raise ScheduleRequestError("--validators must be at least 1")
    if req.on_chain and req.method != "admm":
        raise ScheduleRequestError("--on-chain runs ADMM's aggregator on chain; use --method admm")
    if req.validators > 1 and not req.on_chain:
        raise ScheduleRequestError("--validators needs --on-chain")
    try:
        feeder = load_feeder(req.case)
    except (FeederError, DerSpecError) as exc:
        raise ScheduleRequestError(str(exc)) from exc
    try:
        central = solve_central(feeder)
    except ScheduleError as exc:
        raise ScheduleRequestError(str(exc)) from exc
    exact = central.relaxation_gap <= RELAXATION_EXACT_TOL
    out: dict[str, Any] = {
        "case": req.case,
        "method": req.method,
        "on_chain": bool(req.on_chain),
        "validators": req.validators if req.on_chain else 0,
        "objective": round(central.objective_usd, 6),
        "iterations": 0,
        "gap_pct": 0.0,
        "primal_residual": 0.0,
        "dual_residual": 0.0,
        "seconds": round(central.seconds, 3),
        "relaxation_exact": bool(exact),
        "relaxation_gap": central.relaxation_gap,
        "dlmp": _dlmp_stats(central.dlmp_usd_per_mwh),
        "admm_objective": None,
        "admm_gap_pct": None,
        "central_objective": round(central.objective_usd, 6),
        "central_seconds": round(central.seconds, 3),
    }
    if req.method == "central":
        # the optimum run through the AC power flow: the check that the relaxation is exact
        ran = dispatch(
            feeder,
            central.p_mw,
            central.model.generation_mw()[0],
            central.objective_usd,
            central.v_pu2[0],
        )
        out["dispatch"] = _dispatch_stats(feeder, central.p_mw, ran)
        return out
    from gridledger.grid.admm import default_options

    options = default_options(req.max_iter, req.rho, clusters=req.clusters)
    if req.on_chain:
        from gridledger.agents.admm_chain import (
            OnChainError,
            evaluate_chain_schedule,
            run_on_chain,
        )
        from gridledger.agents.der_agent import W_PER_PU
        from gridledger.market.aggregation import SCALE

        home = req.home or Path(tempfile.mkdtemp(prefix="gridledger-admm-"))
        try:
            run = run_on_chain(feeder, options, home, req.validators, req.agent_processes)
        except OnChainError as exc:
            raise ScheduleRequestError(str(exc)) from exc
        if run.schedule is None:
            raise ScheduleRequestError(f"round ended {run.status} without a schedule: {run.state}")
        p_sched = np.array(run.schedule["p_w"], dtype=float) / W_PER_PU
        try:
            admm_objective, ran = evaluate_chain_schedule(feeder, run.schedule)
        except (OnChainError, DispatchError) as exc:
            raise ScheduleRequestError(str(exc)) from exc
        dlmp = np.array(run.schedule["dlmp_utoken_per_kwh"]) / 1000.0
        last = run.state["history"][-1]
        out.update(
            admm_objective=round(admm_objective, 6),
            iterations=run.iterations,
            primal_residual=last[1] / SCALE,
            dual_residual=last[2] / SCALE,
            seconds=round(run.seconds, 3),
            dlmp=_dlmp_stats(dlmp),
            status=run.status,
            home=str(home),
        )
    else:
        from gridledger.grid.admm import solve_admm

        res = solve_admm(feeder, options)
        assert res.dispatch is not None  # default_options keeps dispatch on
        ran, p_sched = res.dispatch, res.p_mw
        out.update(
            admm_objective=round(res.objective_usd, 6),
            iterations=res.iterations,
            primal_residual=res.primal_residual,
            dual_residual=res.dual_residual,
            seconds=round(res.seconds, 3),
            dlmp=_dlmp_stats(res.dlmp_usd_per_mwh),
            converged=res.converged,
        )
    # the schedule is worth what running it costs (grid/dispatch.py): the devices as
    # scheduled, the root's generator as the slack, the substation voltage within the band
    out["objective"] = round(ran.cost_usd, 6)
    out["dispatch"] = _dispatch_stats(feeder, p_sched, ran)
    out["gap_pct"] = _gap_pct(ran.cost_usd, central.objective_usd)
    out["admm_gap_pct"] = _gap_pct(out["admm_objective"], central.objective_usd)
    return out


def _gap_pct(objective_usd: float, central_usd: float) -> float:
    return round(100 * (objective_usd - central_usd) / abs(central_usd), 5)


def audit_rounds(db_path: str) -> dict[str, Any]:
    """Replay the aggregator from the committed ``admm.*`` transactions; compare with state."""
    from gridledger.chain import encoding
    from gridledger.chain.contracts.aggregator import chain_records, replay
    from gridledger.chain.store import Store

    if not Path(db_path).is_file():
        raise ScheduleRequestError(f"no chain database at {db_path}")
    store = Store(db_path)
    try:
        rounds = replay(chain_records(store))

        def state(key: str) -> Any:
            raw = store.state_get(key.encode())
            return None if raw is None else encoding.decode(raw)

        out = {}
        for rid, r in rounds.items():
            st = state(round_key(rid, "state")) or {}
            same = (
                r["z"] == state(round_key(rid, "z"))
                and r["xi"] == state(round_key(rid, "xi"))
                and r["history"] == st.get("history")
            )
            schedule = state(round_key(rid, "schedule"))
            if r["schedule"] is not None:
                same = same and all(
                    r["schedule"][k] == schedule[k]
                    for k in ("z", "p_w", "dlmp_utoken_per_kwh", "status")
                )
            out[rid] = {"iterations": len(r["history"]), "status": st.get("status"),
                        "matches": bool(same)}  # fmt: skip
        return out
    finally:
        store.close()
