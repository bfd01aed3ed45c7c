"""The schedule as the feeder would run it: an AC power flow of the scheduled injections.

ADMM stops before the agents' copies agree exactly (the primal residual is not zero), so the sum
of the agents' local costs is the cost of no operation the feeder could actually carry out: the
root's generator is priced at the root's *own* view of the flows.  What a schedule is worth is
the cost of running it:

* every node's devices follow their schedule (each satisfies its own device constraints exactly,
  they are hard constraints of its local problem);
* the substation — the root's generator — supplies whatever the feeder then needs (the slack);
* the DSO sets the substation voltage (the transformer tap) per hour, within the band, so that
  no bus leaves the band, when that is possible.

Because this operation is AC feasible (voltages, generator limits and device constraints all
hold, which :class:`Dispatch` reports), its cost cannot be below the optimum of the centralized
SOCP, which is a relaxation: the difference is a true optimality gap, positive up to solver
tolerance.  This is the measure of seed 001 §VI ("the optimal cost of the distributed solution
was 0.4 % larger than the … centralized OPF solution").

The power flow is the branch-flow model with the cone at equality, ``ℓ v_π = P² + Q²``: for a
radial feeder that is the AC power flow (checked against pandapower in the tests).  Written by
hand rather than calling pandapower because ADMM evaluates it every iteration for 24 hours at
once: the backward/forward sweep is two small dense products per pass, ≈ 0.1 ms for SCE-56 × 24 h
(pandapower: ≈ 30 ms per hour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridledger.grid.der import KW_PER_PU, Generator
from gridledger.grid.feeders import Feeder


class DispatchError(RuntimeError):
    """The power flow of a schedule did not converge (the message says after how many passes)."""


@dataclass(frozen=True)
class RadialFlow:
    P_mw: np.ndarray  # N × T, power line (i, π(i)) delivers into the parent; row 0 unused
    Q_mvar: np.ndarray
    ell_pu: np.ndarray  # squared current magnitude; row 0 unused
    v_pu2: np.ndarray  # squared voltage magnitude
    root_mw: np.ndarray  # T, the root's net injection (the slack), what its children draw
    root_mvar: np.ndarray
    passes: int


@dataclass(frozen=True)
class Dispatch:
    """The cost and physics of running a schedule; see the module doc."""

    cost_usd: float  # the schedule's local costs with the root generator at its dispatched output
    generator_mw: np.ndarray  # T, the root generator's dispatched output
    slack_mismatch_mw: np.ndarray  # T, dispatched minus scheduled root injection
    root_vm_pu: np.ndarray  # T, the substation voltage the DSO sets
    vm_pu: np.ndarray  # N × T
    loss_mw: np.ndarray  # T
    voltage_violation_pu: float  # largest excursion of any bus outside the band (0: none)
    generator_violation_mw: float  # largest excursion of the root generator outside its limits
    feasible: bool


def subtree_matrix(parent: np.ndarray) -> np.ndarray:
    """``M[i, j] = 1`` when j is in the subtree of i (i included)."""
    n = len(parent)
    m = np.eye(n)
    for j in range(1, n):
        i = int(parent[j])
        while i >= 0:
            m[i, j] = 1.0
            i = int(parent[i]) if i else -1
    return m


def _reactive_parts(feeder: Feeder, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shunt susceptances N × 1, fixed reactive loads N × columns) in pu."""
    load = (np.array([d.load_kvar for d in feeder.ders]) / KW_PER_PU)[:, hours]
    cap = np.array([d.capacitor_kvar for d in feeder.ders])[:, None] / KW_PER_PU
    return cap, load


def reactive_injection_mvar(feeder: Feeder, v_pu2: np.ndarray) -> np.ndarray:
    """Fixed reactive loads plus shunt capacitors ``b·v`` (controllable loads run at unity power
    factor, as in the SOCP)."""
    cap, load = _reactive_parts(feeder, np.arange(feeder.horizon_h))
    result: np.ndarray = cap * v_pu2 - load
    return result


def radial_power_flow(
    feeder: Feeder,
    p_mw: np.ndarray,
    root_v_pu2: np.ndarray,
    tolerance_pu: float = 1e-12,
    max_passes: int = 100,
    subtree: np.ndarray | None = None,
) -> RadialFlow:
    """AC power flow of a radial feeder for all hours at once (backward/forward sweep).

    ``p_mw`` (N × T) are the nodes' real injections (the root's row is ignored: the root is the
    slack); reactive injections follow from the loads and capacitors at each pass's voltages."""
    n, horizon = feeder.n_nodes, feeder.horizon_h
    if p_mw.shape != (n, horizon):
        raise ValueError(f"injections {p_mw.shape} must be nodes × hours = {(n, horizon)}")
    m = subtree_matrix(feeder.parent) if subtree is None else subtree
    return _sweep(feeder, p_mw, root_v_pu2, np.arange(horizon), m, tolerance_pu, max_passes)


def _sweep(
    feeder: Feeder,
    p_mw: np.ndarray,
    root_v_pu2: np.ndarray,
    hours: np.ndarray,
    m: np.ndarray,
    tolerance_pu: float,
    max_passes: int,
) -> RadialFlow:
    """The sweep over columns that may repeat hours (``hours[c]`` is column c's hour, for the
    fixed reactive loads): many perturbed cases in one pass of dense products."""
    n, cols = p_mw.shape
    r, x = feeder.r_pu[:, None], feeder.x_pu[:, None]
    z2 = r**2 + x**2
    parent = np.where(feeder.parent < 0, 0, feeder.parent)
    cap, q_load = _reactive_parts(feeder, hours)
    v = np.broadcast_to(root_v_pu2, (n, cols)).copy()
    ell = np.zeros((n, cols))
    p = p_mw.copy()
    p[0] = 0.0
    passes = 0
    while passes < max_passes:
        passes += 1
        q = cap * v - q_load
        q[0] = 0.0
        # backward: each line delivers its subtree's injections net of the subtree's losses
        flow_p = m @ (p - r * ell)
        flow_q = m @ (q - x * ell)
        flow_p[0] = flow_q[0] = 0.0
        ell = (flow_p**2 + flow_q**2) / v[parent]
        ell[0] = 0.0
        # forward: the drop of every line on the path from the root
        drop = 2 * (r * flow_p + x * flow_q) + z2 * ell
        v_new = root_v_pu2 + m.T @ drop  # drop[0] = 0: the root has no line
        if not np.all(v_new > 0):
            raise DispatchError(
                f"radial power flow: voltage collapse after {passes} passes (the injections are "
                "beyond what the feeder can carry)"
            )
        change = float(np.max(np.abs(v_new - v)))
        v = v_new
        if change <= tolerance_pu:
            break
    else:
        raise DispatchError(
            f"radial power flow did not converge in {max_passes} passes (last change of v "
            f"{change:.2e} pu²): the injections are beyond what the feeder can carry"
        )
    children = feeder.parent == 0
    return RadialFlow(
        P_mw=flow_p,
        Q_mvar=flow_q,
        ell_pu=ell,
        v_pu2=v,
        root_mw=-flow_p[children].sum(axis=0),
        root_mvar=-flow_q[children].sum(axis=0),
        passes=passes,
    )


def marginal_prices_usd_per_mwh(
    feeder: Feeder,
    p_mw: np.ndarray,
    ran: Dispatch,
    step_mw: float = 1e-4,
    subtree: np.ndarray | None = None,
) -> np.ndarray:
    """N × T: what one more MWh drawn at each node and hour costs in the operation as run —
    the root generator's marginal cost at its dispatched output times the node's loss factor
    ``∂(root supply)/∂(load)``, the substation voltage held.

    By the envelope theorem this is the node's DLMP (the dual of its balance) whenever the
    root's generator is the marginal resource and no bus but the root sits at a voltage limit
    (the root's own limit is what holds its voltage): a check on the prices ADMM's agents
    report, computed from the schedule alone. Where another bus is at a limit the DLMP also
    carries that limit's dual, which a schedule does not reveal. Loss factors by one-sided
    differences of ``step_mw``, all nodes in one batched sweep."""
    gen = feeder.ders[0].generator
    if gen is None:
        raise ValueError(f"{feeder.name}: no generator at the root to price the slack")
    n, horizon = feeder.n_nodes, feeder.horizon_h
    m = subtree_matrix(feeder.parent) if subtree is None else subtree
    # column block k: the schedule with node k drawing step_mw more (block 0: as scheduled)
    cases = np.tile(p_mw, (1, n))
    for k in range(1, n):
        cases[k, k * horizon : (k + 1) * horizon] -= step_mw
    root_v = np.tile(ran.root_vm_pu**2, n)
    flow = _sweep(feeder, cases, root_v, np.tile(np.arange(horizon), n), m, 1e-13, 100)
    supply = flow.root_mw.reshape(n, horizon)
    loss_factor = np.ones((n, horizon))
    loss_factor[1:] = (supply[1:] - supply[0]) / step_mw
    lin = np.asarray(gen.cost_lin_usd_per_mwh)
    return (lin + 2 * gen.cost_quad_usd_per_mw2h * ran.generator_mw) * loss_factor


def _closest_root_voltage(
    v_pu2: np.ndarray, root_v_pu2: np.ndarray, wanted_pu2: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """Per hour, the root voltage nearest the wanted one that keeps every bus in [lo, hi],
    to first order (a change of the root's v moves every bus alike); where no root voltage fits
    them all, the one that splits the excursions evenly."""
    low = root_v_pu2 + lo - v_pu2.min(axis=0)  # lifts the lowest bus to lo
    high = root_v_pu2 + hi - v_pu2.max(axis=0)  # brings the highest bus to hi
    fits = low <= high
    result: np.ndarray = np.where(
        fits, np.clip(wanted_pu2, low, np.maximum(low, high)), (low + high) / 2
    )
    return result


def dispatch(
    feeder: Feeder,
    p_mw: np.ndarray,
    root_generator_mw: np.ndarray,
    local_cost_usd: float,
    root_v_pu2: np.ndarray,
    tap_passes: int = 8,
    subtree: np.ndarray | None = None,
) -> Dispatch:
    """Run a schedule: devices as scheduled, the root's generator as the slack, the substation
    voltage set (unless the feeder fixes it) so that every bus stays in the band.

    ``p_mw`` are the scheduled net injections (N × T), ``root_generator_mw`` the root
    generator's scheduled output (T) inside the root's scheduled injection, ``local_cost_usd``
    the sum of the agents' local costs (the root generator's cost at its scheduled output
    included), ``root_v_pu2`` the scheduled substation voltage squared (T)."""
    lo, hi = feeder.vmin_pu**2, feeder.vmax_pu**2
    v0 = np.clip(np.asarray(root_v_pu2, dtype=float), lo, hi)
    if feeder.root_vm_pu is not None:
        v0 = np.full(feeder.horizon_h, feeder.root_vm_pu**2)
    m = subtree_matrix(feeder.parent) if subtree is None else subtree
    flow = radial_power_flow(feeder, p_mw, v0, subtree=m)
    wanted = v0
    for _ in range(tap_passes if feeder.root_vm_pu is None else 0):
        new = np.clip(_closest_root_voltage(flow.v_pu2, v0, wanted, lo, hi), lo, hi)
        if np.all(np.abs(new - v0) <= 1e-12):
            break
        v0 = new
        flow = radial_power_flow(feeder, p_mw, v0, subtree=m)
    scheduled_root_mw = p_mw[0]
    mismatch = flow.root_mw - scheduled_root_mw
    gen = feeder.ders[0].generator
    g_sched = np.asarray(root_generator_mw, dtype=float)
    g = g_sched + mismatch
    if gen is None:
        # no slack: a schedule whose injections do not balance the feeder cannot run
        cost = local_cost_usd
        gen_violation = float(np.max(np.abs(mismatch)))
    else:
        cost = local_cost_usd + generator_cost_usd(gen, g) - generator_cost_usd(gen, g_sched)
        # the root's net reactive injection is its generator's plus its own loads and shunt
        qg = flow.root_mvar - reactive_injection_mvar(feeder, flow.v_pu2)[0]
        gen_violation = max(
            float(np.max(gen.p_min_kw / KW_PER_PU - g)),
            float(np.max(g - gen.p_max_kw / KW_PER_PU)),
            float(np.max(gen.q_min_kvar / KW_PER_PU - qg)),
            float(np.max(qg - gen.q_max_kvar / KW_PER_PU)),
            0.0,
        )
    vm = np.sqrt(flow.v_pu2)
    v_violation = max(float(np.max(feeder.vmin_pu - vm)), float(np.max(vm - feeder.vmax_pu)), 0.0)
    loss = (feeder.r_pu[:, None] * flow.ell_pu)[1:].sum(axis=0)
    return Dispatch(
        cost_usd=float(cost),
        generator_mw=g,
        slack_mismatch_mw=mismatch,
        root_vm_pu=np.sqrt(v0),
        vm_pu=vm,
        loss_mw=loss,
        voltage_violation_pu=v_violation,
        generator_violation_mw=gen_violation,
        # 1e-6 pu / MW: the interior-point tolerance of the schedules being dispatched
        feasible=v_violation <= 1e-6 and gen_violation <= 1e-6,
    )


def generator_cost_usd(gen: Generator, p_mw: np.ndarray) -> float:
    """``Σ_t a·p² + b_t·p`` (seed 001 eq. 6)."""
    lin = np.asarray(gen.cost_lin_usd_per_mwh)
    return float(np.sum(gen.cost_quad_usd_per_mw2h * p_mw**2 + lin * p_mw))
