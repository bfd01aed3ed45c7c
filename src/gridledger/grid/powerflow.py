"""AC power flow by Newton–Raphson: one sparse solve, or a batch of dense solves at once.

Formulation (both kernels)
--------------------------
Unknowns: the voltage angle of every bus but the angle reference, the voltage magnitude of every
PQ bus, and one scalar ``slack_pu``: the active power the slack generators supply beyond their
scheduled ``gen_p``.  Equations: the active power balance at *every* bus (the reference included)
and the reactive balance at PQ buses.  Bus ``i`` receives ``w_i * slack_pu`` where ``w_i`` is the
sum of the normalised ``slack_weight`` of its generators.  With one slack generator this is the
textbook single-slack power flow (``slack_pu`` is the slack's extra output); with weights on
several generators it is the distributed slack of an islanded microgrid.  One formulation for both
keeps a single code path to test.

Units: every array argument and every ``*_pu`` field is per-unit on ``compiled.base_mva`` (power)
and per-unit of the bus nominal voltage (voltage).  Engineering-unit fields say so (``*_mw``,
``*_mvar``, ``*_deg``).

Regulator control
-----------------
``regulator_control="vm"``: generators with role ``regulator`` make their bus a PV bus holding
``gen_vm``; their reactive power is a result.  ``"q"``: they inject the fixed ``gen_q`` and their
bus is a PQ bus (the reactive OPF moves these set-points).  Slack generators always hold
``gen_vm``.  Generators with role ``pq`` always inject ``gen_q``.  SVCs inject ``svc_q``.

Branch loading is current-based, as in pandapower: ``max(|I_from|, |I_to|) / rate_pu``, where
``rate_pu = rate_mva / base_mva`` is read as the current the branch carries at its rating and
nominal voltage.  Unrated branches (``rate_mva == 0``) report a loading of 0 (they never bind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .compiled import CompiledNetwork
from .network import GenRole, Network, RegulatorControl
from .pf_batch import run_pf_batch
from .pf_setup import (
    DIVERGED_MISMATCH_PU,
    Setup,
    as_compiled,
    check_vector,
    generator_q,
    make_setup,
    setup_from_holds,
    specified_injection,
    start_angles,
)
from .results import BatchPowerFlowResult, PowerFlowDidNotConverge, PowerFlowResult

__all__ = [
    "BatchPowerFlowResult",
    "PowerFlowDidNotConverge",
    "PowerFlowResult",
    "RegulatorControl",
    "run_pf",
    "run_pf_batch",
]


def _mismatch(
    ybus: sp.csr_matrix,
    v: np.ndarray,
    sbus: np.ndarray,
    w: np.ndarray,
    slack: float,
    pq: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    s = v * np.conj(ybus @ v)
    mis = s - sbus - w * slack
    return np.concatenate([mis.real, mis[pq].imag]), s


@dataclass(frozen=True)
class _SparsePattern:
    """Where each admittance entry's derivatives land in the sparse Jacobian (fixed per setup).

    Building the Jacobian with scipy's sparse algebra (diags, products, hstack/vstack) costs
    several ms per iteration on case118, nearly all of it overhead; filling the data array of a
    CSC matrix whose structure is computed once costs tens of µs.
    """

    rows: np.ndarray  # Ybus nonzeros, every diagonal included
    cols: np.ndarray
    y: np.ndarray
    diag: np.ndarray  # (nb,) position of (i, i) among the nonzeros
    take: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # nonzeros feeding each block
    slack_rows: np.ndarray
    slack_vals: np.ndarray
    perm: np.ndarray  # J values in block order -> CSC order
    indices: np.ndarray
    indptr: np.ndarray
    n_eq: int


_SPARSE_CACHE: dict[tuple[int, bytes], tuple[CompiledNetwork, _SparsePattern]] = {}


def _sparse_pattern(c: CompiledNetwork, st: Setup) -> _SparsePattern:
    key = (id(c), st.q_fixed_gen.tobytes())
    hit = _SPARSE_CACHE.get(key)
    if hit is not None and hit[0] is c:
        return hit[1]
    nb = c.n_bus
    coo = c.ybus.tocoo()
    lin = np.concatenate([coo.row * nb + coo.col, np.arange(nb) * (nb + 1)])
    val = np.concatenate([coo.data, np.zeros(nb, dtype=complex)])
    uniq, inverse = np.unique(lin, return_inverse=True)
    y = np.zeros(uniq.size, dtype=complex)
    np.add.at(y, inverse, val)
    rows, cols = uniq // nb, uniq % nb
    diag = np.searchsorted(uniq, np.arange(nb) * (nb + 1))
    nn, npq = st.nonref.size, st.pq.size
    col_va = np.full(nb, -1)
    col_va[st.nonref] = np.arange(nn)
    col_vm = np.full(nb, -1)
    col_vm[st.pq] = nn + np.arange(npq)
    row_q = np.full(nb, -1)
    row_q[st.pq] = nb + np.arange(npq)
    a = np.flatnonzero(col_va[cols] >= 0)
    b = np.flatnonzero(col_vm[cols] >= 0)
    cq = np.flatnonzero((row_q[rows] >= 0) & (col_va[cols] >= 0))
    d = np.flatnonzero((row_q[rows] >= 0) & (col_vm[cols] >= 0))
    slack_rows = np.flatnonzero(st.bus_weight != 0)
    n_eq = nb + npq
    j_rows = np.concatenate([rows[a], rows[b], row_q[rows[cq]], row_q[rows[d]], slack_rows])
    j_cols = np.concatenate(
        [
            col_va[cols[a]],
            col_vm[cols[b]],
            col_va[cols[cq]],
            col_vm[cols[d]],
            np.full(slack_rows.size, n_eq - 1),
        ]
    )
    order = sp.csc_matrix(
        (np.arange(1, j_rows.size + 1, dtype=float), (j_rows, j_cols)), shape=(n_eq, n_eq)
    )
    pattern = _SparsePattern(
        rows=rows,
        cols=cols,
        y=y,
        diag=diag,
        take=(a, b, cq, d),
        slack_rows=slack_rows,
        slack_vals=-st.bus_weight[slack_rows],
        perm=order.data.astype(np.int64) - 1,
        indices=order.indices,
        indptr=order.indptr,
        n_eq=n_eq,
    )
    if len(_SPARSE_CACHE) > 64:
        _SPARSE_CACHE.clear()
    _SPARSE_CACHE[key] = (c, pattern)
    return pattern


def _jacobian(pat: _SparsePattern, v: np.ndarray, s: np.ndarray) -> sp.csc_matrix:
    """dS/dVa and dS/dVm per admittance entry, placed by the precomputed pattern."""
    vm = np.abs(v)
    g = v[pat.rows] * np.conj(pat.y * v[pat.cols])
    dva = -1j * g
    dva[pat.diag] += 1j * s
    dvm = g / vm[pat.cols]
    dvm[pat.diag] += s / vm
    a, b, cq, d = pat.take
    vals = np.concatenate([dva[a].real, dvm[b].real, dva[cq].imag, dvm[d].imag, pat.slack_vals])
    return sp.csc_matrix((vals[pat.perm], pat.indices, pat.indptr), shape=(pat.n_eq, pat.n_eq))


def _newton_scipy(
    c: CompiledNetwork,
    st: Setup,
    v0: np.ndarray,
    sbus: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, float, bool, int, float]:
    ybus = c.ybus
    v = v0.copy()
    va = np.angle(v)
    vm = np.abs(v)
    slack = 0.0
    w = st.bus_weight
    nn = st.nonref.size
    npq = st.pq.size
    pattern = _sparse_pattern(c, st)
    f, s = _mismatch(ybus, v, sbus, w, slack, st.pq)
    norm = float(np.max(np.abs(f))) if f.size else 0.0
    it = 0
    while norm > tol and it < max_iter and norm < DIVERGED_MISMATCH_PU:
        jac = _jacobian(pattern, v, s)
        try:
            dx = spla.splu(jac).solve(-f)
        except RuntimeError:  # singular Jacobian: voltage collapse or a degenerate case
            break
        it += 1
        va[st.nonref] += dx[:nn]
        vm[st.pq] += dx[nn : nn + npq]
        slack += dx[-1]
        v = vm * np.exp(1j * va)
        f, s = _mismatch(ybus, v, sbus, w, slack, st.pq)
        norm = float(np.max(np.abs(f)))
        if not np.isfinite(norm):
            norm = np.inf
            break
    return v, slack, bool(norm <= tol), it, norm


@dataclass
class _KluBackend:
    """lightsim2grid's Newton–Raphson (C++, KLU) set up for one network and bus typing.

    Its formulation is ours when every bus that shares the slack holds its voltage (the usual
    case: one slack generator, or an islanded grid whose DGs hold voltage): unknowns are the
    angles of all buses but the reference, the magnitudes of PQ buses and one slack power split
    by the bus weights; equations are P at every bus and Q at PQ buses. It does not fit when a
    bus sharing the slack is a PQ bus (``regulator_control="q"`` on an islanded microgrid): such
    setups stay on :func:`_newton_scipy`. Measured on SimBench 1-MVLV-rural-all-0-sw (5,483
    buses): 26 ms per solve against 193 ms with scipy's SuperLU (bench/pf.py).
    """

    solver: Any
    ybus: sp.csc_matrix
    slack_ids: np.ndarray  # the reference first: lightsim2grid takes it as the angle reference
    weights: np.ndarray
    pv: np.ndarray
    pq: np.ndarray


# The solver keeps KLU's symbolic analysis between calls; one per (network, bus typing).
_KLU_CACHE: dict[tuple[int, bytes], tuple[CompiledNetwork, _KluBackend | None]] = {}
USE_LIGHTSIM2GRID = True


def _klu_backend(c: CompiledNetwork, st: Setup) -> _KluBackend | None:
    key = (id(c), st.q_fixed_gen.tobytes())
    hit = _KLU_CACHE.get(key)
    if hit is not None and hit[0] is c:
        return hit[1]
    weighted = np.flatnonzero(st.bus_weight != 0)
    backend = None
    if not np.isin(weighted, st.pq).any():
        from lightsim2grid.algorithm import NR_KLU  # C++ extension: only when a PF runs

        slack_ids = np.concatenate([[st.ref], np.setdiff1d(weighted, [st.ref])]).astype(np.int32)
        backend = _KluBackend(
            solver=NR_KLU(),
            ybus=sp.csc_matrix(c.ybus),
            slack_ids=slack_ids,
            weights=st.bus_weight.astype(float),
            pv=np.setdiff1d(st.pv, slack_ids).astype(np.int32),
            pq=st.pq.astype(np.int32),
        )
    if len(_KLU_CACHE) > 64:
        _KLU_CACHE.clear()
    _KLU_CACHE[key] = (c, backend)
    return backend


def _newton_klu(
    backend: _KluBackend,
    c: CompiledNetwork,
    st: Setup,
    v0: np.ndarray,
    sbus: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, float, bool, int, float] | None:
    """One solve by lightsim2grid; ``None`` if it did not converge (the caller then runs our own
    Newton, so a failure reports the same iterations and mismatch with or without it)."""
    ok = backend.solver.compute_pf(
        backend.ybus, v0.copy(), sbus, backend.slack_ids, backend.weights,
        backend.pv, backend.pq, max_iter, tol,
    )  # fmt: skip
    if not ok:
        return None
    v = backend.solver.get_V()
    # lightsim2grid does not return the slack power: at the solution every weighted bus's P
    # mismatch is w_i * slack, so it is their least-squares ratio.
    w = st.bus_weight
    p_mis = (v * np.conj(c.ybus @ v)).real - sbus.real
    slack = float(np.dot(w, p_mis) / np.dot(w, w))
    f, _ = _mismatch(c.ybus, v, sbus, w, slack, st.pq)
    norm = float(np.max(np.abs(f)))
    if not norm <= tol:
        return None
    return v, slack, True, int(backend.solver.get_nb_iter()), norm


def _newton_sparse(
    c: CompiledNetwork,
    st: Setup,
    v0: np.ndarray,
    sbus: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, float, bool, int, float]:
    backend = _klu_backend(c, st) if USE_LIGHTSIM2GRID else None
    if backend is not None:
        solved = _newton_klu(backend, c, st, v0, sbus, tol, max_iter)
        if solved is not None:
            return solved
    return _newton_scipy(c, st, v0, sbus, tol, max_iter)


_ANGLE_CACHE: dict[int, tuple[CompiledNetwork, np.ndarray]] = {}


def _start_phasors(c: CompiledNetwork) -> np.ndarray:
    """``exp(j·start_angles)``, once per network (the graph walk of :func:`start_angles` is a
    Python loop over branches: 110 ms on a 5,483-bus SimBench grid, more than the solve)."""
    hit = _ANGLE_CACHE.get(id(c))
    if hit is not None and hit[0] is c:
        return hit[1]
    # Wrapped into (-π, π] as a caller's v0 is, so both starts are the same numbers.
    phasors = np.exp(1j * np.angle(np.exp(1j * start_angles(c))))
    phasors.flags.writeable = False
    if len(_ANGLE_CACHE) > 64:
        _ANGLE_CACHE.clear()
    _ANGLE_CACHE[id(c)] = (c, phasors)
    return phasors


_SETUP_CACHE: dict[tuple[int, str], tuple[CompiledNetwork, Setup]] = {}


def _setup(c: CompiledNetwork, control: RegulatorControl) -> Setup:
    """:func:`make_setup`, once per network and control mode (the DSO solves many power flows
    on one compiled network; the setup walks the generators in Python)."""
    hit = _SETUP_CACHE.get((id(c), control))
    if hit is not None and hit[0] is c:
        return hit[1]
    st = make_setup(c, control)
    if len(_SETUP_CACHE) > 64:
        _SETUP_CACHE.clear()
    _SETUP_CACHE[(id(c), control)] = (c, st)
    return st


def run_pf(
    net: Network | CompiledNetwork,
    gen_vm: Any = None,
    gen_q: Any = None,
    svc_q: Any = None,
    regulator_control: RegulatorControl | None = None,
    tol: float = 1e-8,
    max_iter: int = 30,
    *,
    gen_p: Any = None,
    check: bool = True,
    v0: np.ndarray | None = None,
    enforce_q_limits: bool = False,
) -> PowerFlowResult:
    """Solve one AC power flow by Newton–Raphson on the sparse admittance matrix.

    ``gen_vm`` (ng,) pu voltage set-points of voltage-holding generators; ``gen_q`` (ng,) and
    ``gen_p`` (ng,) pu on ``base_mva`` for generators injecting fixed power; ``svc_q`` (ns,) pu.
    ``None`` takes the network's own values (and ``regulator_control`` the network's own
    ``regulator_control``).  ``tol`` is the largest power mismatch in pu.
    ``check=True`` raises :class:`PowerFlowDidNotConverge` (with the result attached) instead of
    returning ``converged=False``.  ``enforce_q_limits`` switches regulators that violate
    ``[qmin, qmax]`` to PQ at the limit and solves again (``vm`` control only).
    """
    c = as_compiled(net)
    if regulator_control is None:
        regulator_control = c.regulator_control
    ng = c.gen_bus.size
    vm_set = check_vector("gen_vm", gen_vm, ng, c.gen_vm)
    q_set = check_vector("gen_q", gen_q, ng, c.gen_q)
    p_set = check_vector("gen_p", gen_p, ng, c.gen_p)
    s_set = check_vector("svc_q", svc_q, c.svc_bus.size, c.svc_q)
    if np.any(vm_set <= 0):
        raise ValueError("gen_vm must be positive")
    if not (tol > 0 and max_iter >= 1):
        raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    st = _setup(c, regulator_control)
    if v0 is not None:
        v0 = np.asarray(v0, dtype=complex)
        if v0.shape != (c.n_bus,):
            raise ValueError(f"v0 must have shape ({c.n_bus},), got {v0.shape}")
    result = _solve_one(c, st, vm_set, q_set, p_set, s_set, tol, max_iter, v0, regulator_control)
    if enforce_q_limits and regulator_control == "vm" and result.converged:
        result = _enforce_q_limits(c, st, vm_set, q_set, p_set, s_set, tol, max_iter, result)
    if check and not result.converged:
        raise PowerFlowDidNotConverge(
            f"{c.name}: power flow did not converge after {result.iterations} iterations; "
            f"largest mismatch {result.max_mismatch_mva:.3g} MVA "
            f"({result.max_mismatch_pu:.3g} pu, tolerance {tol:g} pu)",
            result,
        )
    return result


def _solve_one(
    c: CompiledNetwork,
    st: Setup,
    vm_set: np.ndarray,
    q_set: np.ndarray,
    p_set: np.ndarray,
    s_set: np.ndarray,
    tol: float,
    max_iter: int,
    v0: np.ndarray | None,
    control: str,
) -> PowerFlowResult:
    nb = c.n_bus
    held = st.vm_gen >= 0
    if v0 is None:
        vm0 = np.ones(nb)
        vm0[held] = vm_set[st.vm_gen[held]]
        v0 = vm0 * _start_phasors(c)
    else:
        vm0 = np.abs(v0)
        vm0[held] = vm_set[st.vm_gen[held]]
        v0 = vm0 * np.exp(1j * np.angle(v0))
    sbus = specified_injection(c, st, p_set, q_set, s_set)
    v, slack, converged, it, norm = _newton_sparse(c, st, v0, sbus, tol, max_iter)
    return _result(c, st, v, slack, converged, it, norm, p_set, q_set, s_set, control)


def _result(
    c: CompiledNetwork,
    st: Setup,
    v: np.ndarray,
    slack: float,
    converged: bool,
    it: int,
    norm: float,
    p_set: np.ndarray,
    q_set: np.ndarray,
    s_set: np.ndarray,
    control: str,
) -> PowerFlowResult:
    base = c.base_mva
    s_calc = v * np.conj(c.ybus @ v)
    i_f = c.yf @ v
    i_t = c.yt @ v
    s_f = v[c.branch_from] * np.conj(i_f)
    s_t = v[c.branch_to] * np.conj(i_t)
    rated = c.rate_pu > 0
    loading = np.where(
        rated, np.maximum(np.abs(i_f), np.abs(i_t)) / np.where(rated, c.rate_pu, 1.0), 0.0
    )
    gen_p = p_set + c.slack_weight * slack
    gen_q = generator_q(c, st, s_calc.imag, q_set, s_set)
    ids = c.bus_ids
    return PowerFlowResult(
        converged=converged,
        iterations=it,
        max_mismatch_pu=float(norm),
        base_mva=base,
        bus_ids=ids,
        vm_pu=np.abs(v),
        va_deg=np.rad2deg(np.angle(v)),
        bus_p_mw=s_calc.real * base,
        bus_q_mvar=s_calc.imag * base,
        gen_p_mw=gen_p * base,
        gen_q_mvar=gen_q * base,
        slack_mw=float(slack * base),
        branch_from=ids[c.branch_from],
        branch_to=ids[c.branch_to],
        p_from_mw=s_f.real * base,
        q_from_mvar=s_f.imag * base,
        p_to_mw=s_t.real * base,
        q_to_mvar=s_t.imag * base,
        loading_pct=loading * 100.0,
        rated=rated,
        loss_mw=float(np.sum(s_f.real + s_t.real) * base),
        regulator_control=control,
        v_complex=v,
        no_load_loss_mw=_no_load_loss_pu(c, np.abs(v)) * base,
    )


def _no_load_loss_pu(c: CompiledNetwork, vm: np.ndarray) -> float:
    g = c.no_load_g_pu
    return float(g @ vm**2) if g.size else 0.0


def _enforce_q_limits(
    c: CompiledNetwork,
    st: Setup,
    vm_set: np.ndarray,
    q_set: np.ndarray,
    p_set: np.ndarray,
    s_set: np.ndarray,
    tol: float,
    max_iter: int,
    result: PowerFlowResult,
) -> PowerFlowResult:
    """PV→PQ switching: a regulator beyond its Q range is fixed at the violated limit."""
    q = q_set.copy()
    fixed = st.q_fixed_gen.copy()
    regulators = c.gen_role == GenRole.REGULATOR
    for _ in range(c.gen_bus.size + 1):
        gq = result.gen_q_mvar / c.base_mva
        over = regulators & ~fixed & (gq > c.gen_qmax + 1e-9)
        under = regulators & ~fixed & (gq < c.gen_qmin - 1e-9)
        if not (over.any() or under.any()):
            return result
        q[over] = c.gen_qmax[over]
        q[under] = c.gen_qmin[under]
        fixed |= over | under
        st = setup_from_holds(c, ~fixed)
        result = _solve_one(
            c,
            st,
            vm_set,
            q,
            p_set,
            s_set,
            tol,
            max_iter,
            result.v_complex,
            result.regulator_control,
        )
        if not result.converged:
            return result
    return result
