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

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .compiled import BUS_PQ, BUS_PV, BUS_REF, CompiledNetwork, compile_network
from .network import GenRole, Network

RegulatorControl = Literal["vm", "q"]

# Above this the iterate is diverging: stop early rather than iterate on overflowing numbers.
_DIVERGED_MISMATCH_PU = 1e10


class PowerFlowDidNotConverge(RuntimeError):
    """Newton–Raphson stopped without meeting the tolerance; carries the last result."""

    def __init__(self, message: str, result: PowerFlowResult | None = None) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------------------------
# The problem for one control mode: bus types, index sets, per-bus weights.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    bus_type: np.ndarray  # (nb,) for this control mode
    ref: int
    pv: np.ndarray
    pq: np.ndarray
    nonref: np.ndarray  # every bus but ref, ascending
    vm_gen: np.ndarray  # (nb,) index of the generator whose gen_vm sets the bus voltage, -1: none
    q_fixed_gen: np.ndarray  # (ng,) bool: generator injects its gen_q in this mode
    bus_weight: np.ndarray  # (nb,) share of the slack power each bus receives
    q_share: np.ndarray  # (ng,) share of its bus' free Q each voltage-holding generator takes


def _setup(c: CompiledNetwork, control: RegulatorControl) -> _Setup:
    if control not in ("vm", "q"):
        raise ValueError(f"regulator_control must be 'vm' or 'q', got {control!r}")
    role = c.gen_role
    holds_v = role == GenRole.SLACK if control == "q" else role != GenRole.PQ
    return _setup_from_holds(c, holds_v)


def _setup_from_holds(c: CompiledNetwork, holds_v: np.ndarray) -> _Setup:
    """Bus types and shares when exactly the generators in ``holds_v`` hold their voltage."""
    nb = c.n_bus
    bus_type = np.full(nb, BUS_PQ, dtype=np.int8)
    bus_type[c.gen_bus[holds_v]] = BUS_PV
    bus_type[c.ref] = BUS_REF
    vm_gen = np.full(nb, -1, dtype=np.int64)
    # The first voltage-holding generator of a bus sets its voltage (reverse order so the first
    # assignment wins).
    for g in np.flatnonzero(holds_v)[::-1]:
        vm_gen[c.gen_bus[g]] = g
    # Generators sharing a voltage-controlled bus split its free reactive power by rating.
    sn_bus = np.bincount(c.gen_bus[holds_v], weights=c.gen_sn[holds_v], minlength=nb)
    sn_at = sn_bus[c.gen_bus]
    q_share = np.where(holds_v, c.gen_sn / np.where(sn_at > 0, sn_at, 1.0), 0.0)
    return _Setup(
        bus_type=bus_type,
        ref=c.ref,
        pv=np.flatnonzero(bus_type == BUS_PV),
        pq=np.flatnonzero(bus_type == BUS_PQ),
        nonref=np.flatnonzero(np.arange(nb) != c.ref),
        vm_gen=vm_gen,
        q_fixed_gen=~holds_v,
        bus_weight=np.bincount(c.gen_bus, weights=c.slack_weight, minlength=nb),
        q_share=q_share,
    )


def _start_angles(c: CompiledNetwork) -> np.ndarray:
    """Flat-start angles that follow the phase-shifting transformers from the reference bus.

    A plain flat start (all angles 0) diverges when a transformer shifts by, say, 150° (a Dyn5
    distribution transformer in pandapower): the low-voltage side sits near -150°.
    """
    nb = c.n_bus
    shift = c.branch_shift_deg
    if shift.size == 0 or not np.any(shift):
        return np.zeros(nb)
    from scipy.sparse.csgraph import breadth_first_order

    f, t = c.branch_from, c.branch_to
    graph = sp.coo_matrix((np.ones(f.size), (f, t)), shape=(nb, nb)).tocsr()
    order, pred = breadth_first_order(graph, c.ref, directed=False, return_predecessors=True)
    step = {}
    for k in range(f.size):
        rad = np.deg2rad(shift[k])
        step.setdefault((int(f[k]), int(t[k])), -rad)  # V_to ≈ V_from · e^{-j shift}
        step.setdefault((int(t[k]), int(f[k])), rad)
    angle = np.zeros(nb)
    for b in order[1:]:
        angle[b] = angle[pred[b]] + step[(int(pred[b]), int(b))]
    return angle


def _as_compiled(net: Network | CompiledNetwork) -> CompiledNetwork:
    if isinstance(net, CompiledNetwork):
        return net
    if isinstance(net, Network):
        return compile_network(net)
    raise TypeError(f"expected a Network or CompiledNetwork, got {type(net).__name__}")


def _check_vector(name: str, value: Any, n: int, default: np.ndarray) -> np.ndarray:
    if value is None:
        return default
    arr = np.asarray(value, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries at {np.flatnonzero(~np.isfinite(arr))}")
    return arr


def _check_batch(name: str, value: Any, n: int, default: np.ndarray, batch: int) -> np.ndarray:
    if value is None:
        return np.broadcast_to(default, (batch, n))
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] not in (1, batch):
        raise ValueError(f"{name} must have shape ({batch}, {n}) or ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries")
    return np.broadcast_to(arr, (batch, n))


# --------------------------------------------------------------------------------------------
# Single solve: sparse Jacobian, sparse LU.
# --------------------------------------------------------------------------------------------


@dataclass
class PowerFlowResult:
    """One solved (or failed) power flow; arrays follow the case's own bus and branch order."""

    converged: bool
    iterations: int
    max_mismatch_pu: float
    base_mva: float
    bus_ids: np.ndarray
    vm_pu: np.ndarray
    va_deg: np.ndarray
    bus_p_mw: np.ndarray  # net injection (generation - load), shunts excluded
    bus_q_mvar: np.ndarray
    gen_p_mw: np.ndarray
    gen_q_mvar: np.ndarray
    slack_mw: float  # the balance the slack generator(s) supplied beyond their schedule
    branch_from: np.ndarray  # bus ids
    branch_to: np.ndarray
    p_from_mw: np.ndarray
    q_from_mvar: np.ndarray
    p_to_mw: np.ndarray
    q_to_mvar: np.ndarray
    loading_pct: np.ndarray  # 0 for unrated branches
    rated: np.ndarray  # bool: branch has a rating
    loss_mw: float
    regulator_control: str = "vm"
    v_complex: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def max_mismatch_mva(self) -> float:
        return self.max_mismatch_pu * self.base_mva

    @property
    def branch_loss_mw(self) -> np.ndarray:
        return self.p_from_mw + self.p_to_mw

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``gridledger pf --json`` (plain Python types)."""
        return {
            "converged": bool(self.converged),
            "iterations": int(self.iterations),
            "max_mismatch_mva": float(self.max_mismatch_mva),
            "loss_mw": float(self.loss_mw),
            "buses": [
                {"bus": _plain(b), "vm_pu": float(v), "va_deg": float(a)}
                for b, v, a in zip(self.bus_ids, self.vm_pu, self.va_deg, strict=True)
            ],
            "lines": [
                {
                    "from": _plain(f),
                    "to": _plain(t),
                    "loading_pct": float(ld) if r else None,
                    "p_from_mw": float(p),
                    "q_from_mvar": float(q),
                }
                for f, t, ld, r, p, q in zip(
                    self.branch_from,
                    self.branch_to,
                    self.loading_pct,
                    self.rated,
                    self.p_from_mw,
                    self.q_from_mvar,
                    strict=True,
                )
            ],
            "generators": [
                {"index": i, "p_mw": float(p), "q_mvar": float(q)}
                for i, (p, q) in enumerate(zip(self.gen_p_mw, self.gen_q_mvar, strict=True))
            ],
        }


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


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


def _sparse_pattern(c: CompiledNetwork, st: _Setup) -> _SparsePattern:
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


def _newton_sparse(
    c: CompiledNetwork,
    st: _Setup,
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
    while norm > tol and it < max_iter and norm < _DIVERGED_MISMATCH_PU:
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


def run_pf(
    net: Network | CompiledNetwork,
    gen_vm: Any = None,
    gen_q: Any = None,
    svc_q: Any = None,
    regulator_control: RegulatorControl = "vm",
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
    ``None`` takes the network's own values.  ``tol`` is the largest power mismatch in pu.
    ``check=True`` raises :class:`PowerFlowDidNotConverge` (with the result attached) instead of
    returning ``converged=False``.  ``enforce_q_limits`` switches regulators that violate
    ``[qmin, qmax]`` to PQ at the limit and solves again (``vm`` control only).
    """
    c = _as_compiled(net)
    ng = c.gen_bus.size
    vm_set = _check_vector("gen_vm", gen_vm, ng, c.gen_vm)
    q_set = _check_vector("gen_q", gen_q, ng, c.gen_q)
    p_set = _check_vector("gen_p", gen_p, ng, c.gen_p)
    s_set = _check_vector("svc_q", svc_q, c.svc_bus.size, c.svc_q)
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
    st: _Setup,
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
        v0 = np.exp(1j * _start_angles(c))
    else:
        vm0 = np.abs(v0)
    vm0 = vm0.copy()
    vm0[held] = vm_set[st.vm_gen[held]]
    v0 = vm0 * np.exp(1j * np.angle(v0))
    sbus = _sbus(c, st, p_set, q_set, s_set)
    v, slack, converged, it, norm = _newton_sparse(c, st, v0, sbus, tol, max_iter)
    return _result(c, st, v, slack, converged, it, norm, p_set, q_set, s_set, control)


def _sbus(
    c: CompiledNetwork, st: _Setup, p_set: np.ndarray, q_set: np.ndarray, s_set: np.ndarray
) -> np.ndarray:
    nb = c.n_bus
    p = np.bincount(c.gen_bus, weights=p_set, minlength=nb) - c.load_p
    qg = np.where(st.q_fixed_gen, q_set, 0.0)
    q = np.bincount(c.gen_bus, weights=qg, minlength=nb) - c.load_q
    if c.svc_bus.size:
        q = q + np.bincount(c.svc_bus, weights=s_set, minlength=nb)
    return p + 1j * q


def _gen_q(
    c: CompiledNetwork, st: _Setup, s_calc_q: np.ndarray, q_set: np.ndarray, s_set: np.ndarray
) -> np.ndarray:
    """Generator Q: set-point for fixed-Q units, a share of the bus' free Q for the others.

    Works on (nb,) or (B, nb) bus arrays; ``q_set``/``s_set`` broadcast the same way.
    """
    nb = c.n_bus
    fixed_q = np.where(st.q_fixed_gen, q_set, 0.0)
    other = _bincount_last(c.gen_bus, fixed_q, nb) - c.load_q
    if c.svc_bus.size:
        other = other + _bincount_last(c.svc_bus, s_set, nb)
    free = s_calc_q - other  # what the voltage-holding generators of each bus supply
    return np.where(st.q_fixed_gen, q_set, free[..., c.gen_bus] * st.q_share)


def _bincount_last(idx: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """``np.bincount`` along the last axis of a 1-D or 2-D ``weights``."""
    if weights.ndim == 1:
        return np.bincount(idx, weights=weights, minlength=n)
    onehot = np.zeros((idx.size, n))
    onehot[np.arange(idx.size), idx] = 1.0
    return weights @ onehot


def _result(
    c: CompiledNetwork,
    st: _Setup,
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
    gen_q = _gen_q(c, st, s_calc.imag, q_set, s_set)
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
    )


def _enforce_q_limits(
    c: CompiledNetwork,
    st: _Setup,
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
        st = _setup_from_holds(c, ~fixed)
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


# --------------------------------------------------------------------------------------------
# Batched solve: many operating points of one network at once, dense.
# --------------------------------------------------------------------------------------------


@dataclass
class BatchPowerFlowResult:
    """``B`` power flows of one network; per-unit on ``base_mva``, one row per operating point."""

    converged: np.ndarray  # (B,) bool
    iterations: np.ndarray  # (B,) int
    max_mismatch: np.ndarray  # (B,) pu
    vm_pu: np.ndarray  # (B, nb)
    va_rad: np.ndarray  # (B, nb)
    loss_pu: np.ndarray  # (B,) sum of branch losses
    gen_p_pu: np.ndarray  # (B, ng)
    gen_q_pu: np.ndarray  # (B, ng)
    branch_loading: np.ndarray  # (B, nl) fraction of rating; 0 where unrated
    slack_pu: np.ndarray  # (B,) balance supplied by the slack generator(s) beyond schedule
    base_mva: float

    @property
    def loss_mw(self) -> np.ndarray:
        return self.loss_pu * self.base_mva

    def __len__(self) -> int:
        return int(self.converged.size)


@dataclass(frozen=True)
class _DenseModel:
    """Dense per-unit matrices of a compiled network, cached per (network, control mode)."""

    ybus: np.ndarray
    yf: np.ndarray
    yt: np.ndarray
    setup: _Setup
    n_eq: int  # equations = unknowns: nb active balances + npq reactive balances
    # [e f] @ y_real = [Re I, Im I] for V = e + jf: real arithmetic is ~3x faster than complex
    y_real: np.ndarray
    # (n_eq, 2nb+1) 0/1: places a Newton step [dva_nonref, dvm_pq, dslack] on [va, vm, slack]
    scatter: np.ndarray
    start_angles: np.ndarray  # (nb,) flat-start angles through phase shifters


_DENSE_CACHE: dict[tuple[int, str], tuple[CompiledNetwork, _DenseModel]] = {}


def _dense(c: CompiledNetwork, control: RegulatorControl) -> _DenseModel:
    key = (id(c), control)
    hit = _DENSE_CACHE.get(key)
    if hit is not None and hit[0] is c:
        return hit[1]
    st = _setup(c, control)
    ybus = c.ybus.toarray()
    g, b = ybus.real.T, ybus.imag.T
    model = _DenseModel(
        ybus=ybus,
        yf=c.yf.toarray(),
        yt=c.yt.toarray(),
        setup=st,
        n_eq=c.n_bus + st.pq.size,
        y_real=np.ascontiguousarray(np.block([[g, b], [-b, g]])),
        scatter=_scatter(st, c.n_bus),
        start_angles=_start_angles(c),
    )
    if len(_DENSE_CACHE) > 64:
        _DENSE_CACHE.clear()
    _DENSE_CACHE[key] = (c, model)
    return model


def _scatter(st: _Setup, nb: int) -> np.ndarray:
    nn, npq = st.nonref.size, st.pq.size
    out = np.zeros((nn + npq + 1, 2 * nb + 1))
    out[np.arange(nn), st.nonref] = 1.0
    out[nn + np.arange(npq), nb + st.pq] = 1.0
    out[-1, -1] = 1.0
    return out


def run_pf_batch(
    compiled: Network | CompiledNetwork,
    gen_vm: Any = None,
    gen_q: Any = None,
    svc_q: Any = None,
    regulator_control: RegulatorControl = "vm",
    tol: float = 1e-8,
    max_iter: int = 20,
    *,
    gen_p: Any = None,
    batch_size: int | None = None,
    v0: np.ndarray | None = None,
    chord: bool = True,
) -> BatchPowerFlowResult:
    """Solve ``B`` power flows of one network at once (a metaheuristic's whole population).

    ``gen_vm``, ``gen_q``, ``gen_p``: (B, ng) pu on ``base_mva`` (a 1-D (ng,) row is shared by
    all); ``svc_q``: (B, ns).  ``B`` comes from whichever array is given, or ``batch_size``.
    ``v0``: by default every member starts from the solved power flow at the batch's mean
    set-points, where the shared chord Jacobian is also taken.  A (nb,) ``v0`` replaces that
    solve (pass a solved state near the batch, e.g. the current operating point: a poor one only
    costs speed, members that converge slowly finish with full Newton); a (B, nb) ``v0`` gives
    each member its own start.
    Never raises on non-convergence: check ``converged``; a row with ``converged`` False holds
    its last iterate (and its ``max_mismatch``), not a solution.

    Why our own numpy kernel rather than lightsim2grid (measured in bench/pf.py; lightsim2grid
    is only a dev dependency): on 9 buses this kernel ran ~1.3× lightsim2grid's one-thread C++
    ``InjectionSweep`` and ~10× a Python loop over its ``ac_pf``, because all members share one
    Jacobian factorisation (chord steps, see ``_chord``) and the per-member work is a few small
    dense products.  For one big network use ``run_pf`` (sparse); memory here is O(B·n) plus
    O(B·n²) for the members that fall back to full Newton.
    """
    c = _as_compiled(compiled)
    ng, ns, nb = c.gen_bus.size, c.svc_bus.size, c.n_bus
    sizes = {
        np.asarray(a).shape[0]
        for a in (gen_vm, gen_q, svc_q, gen_p)
        if a is not None and np.asarray(a).ndim == 2
    }
    if batch_size is not None:
        sizes.add(int(batch_size))
    if len(sizes) > 1:
        raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
    batch = sizes.pop() if sizes else 1
    if batch < 1:
        raise ValueError(f"batch size must be at least 1, got {batch}")
    if not (tol > 0 and max_iter >= 1):
        raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    vm_set = _check_batch("gen_vm", gen_vm, ng, c.gen_vm, batch)
    if np.any(vm_set <= 0):
        raise ValueError("gen_vm must be positive")
    q_set = _check_batch("gen_q", gen_q, ng, c.gen_q, batch)
    p_set = _check_batch("gen_p", gen_p, ng, c.gen_p, batch)
    s_set = _check_batch("svc_q", svc_q, ns, c.svc_q, batch)
    m = _dense(c, regulator_control)
    st = m.setup

    # Specified injections (B, nb), real and reactive apart (real arithmetic is cheaper).
    qg = np.where(st.q_fixed_gen, q_set, 0.0)
    p_spec = _bincount_last(c.gen_bus, p_set, nb) - c.load_p
    q_spec = _bincount_last(c.gen_bus, qg, nb) - c.load_q
    if ns:
        q_spec = q_spec + _bincount_last(c.svc_bus, s_set, nb)
    q_spec_pq = np.ascontiguousarray(q_spec[:, st.pq])

    held = np.flatnonzero(st.vm_gen >= 0)
    per_member = None
    shared = None
    if v0 is not None:
        v0 = np.asarray(v0, dtype=complex)
        if v0.shape == (batch, nb) and batch > 1:
            per_member = v0
        elif v0.shape in ((nb,), (1, nb)):
            shared = v0.reshape(nb)
        else:
            raise ValueError(f"v0 must have shape ({nb},) or ({batch}, {nb}), got {v0.shape}")
        if not np.isfinite(v0).all() or np.any(np.abs(v0) == 0):
            raise ValueError("v0 must be finite and non-zero")
    if shared is not None:
        # The caller's warm start (typically the current operating point) is both where every
        # member starts and where the chord Jacobian is taken: no extra solve per call, which
        # matters for the small populations (20-50) of the metaheuristics.
        base: tuple[np.ndarray, float] | None = (shared, 0.0)
    else:
        # Shared warm start and chord Jacobian: the power flow at the batch's mean set-points.
        base = _base_state(
            m,
            p_spec.mean(axis=0),
            q_spec_pq.mean(axis=0),
            vm_set.mean(axis=0),
            tol,
            max_iter,
            None if per_member is None else per_member.mean(axis=0),
        )
    if per_member is not None:
        v0 = per_member
    elif base is not None:
        v0 = base[0]
    else:
        v0 = np.exp(1j * m.start_angles)
    v0 = np.broadcast_to(v0, (batch, nb))
    # Full state per member: [va (nb), vm (nb), slack]; the solvers update it in place.
    state = np.empty((batch, 2 * nb + 1))
    state[:, :nb] = np.angle(v0)
    state[:, nb : 2 * nb] = np.abs(v0)
    state[:, nb + held] = vm_set[:, st.vm_gen[held]]
    state[:, -1] = 0.0 if base is None else base[1]
    step_map = None
    if chord and base is not None:
        jac0 = _dense_jacobian(m, base[0])
        with contextlib.suppress(np.linalg.LinAlgError):
            step_map = np.linalg.inv(jac0).T @ m.scatter

    chunks = []
    for lo in range(0, batch, _CHUNK):
        hi = min(lo + _CHUNK, batch)
        chunks.append(
            _solve_chunk(
                c,
                m,
                state[lo:hi],
                p_spec[lo:hi],
                q_spec_pq[lo:hi],
                step_map,
                tol,
                max_iter,
                p_set[lo:hi],
                q_set[lo:hi],
                s_set[lo:hi],
            )
        )
    return BatchPowerFlowResult(
        **{
            f.name: (
                c.base_mva
                if f.name == "base_mva"
                else np.concatenate([getattr(ch, f.name) for ch in chunks])
            )
            for f in dataclasses.fields(BatchPowerFlowResult)
        }
    )


# Members solved together: small enough that the (chunk, n) temporaries stay in cache, large
# enough that numpy's per-call overhead is spread thin (measured on 9 buses: 1024 is ~2x faster
# per power flow than one 10,000-member block).
_CHUNK = 1024
# Chord steps before a member that still converges slowly is handed to full Newton.
_MAX_CHORD_STEPS = 12
# A chord member must cut its mismatch at least by this factor per step, or it goes to Newton.
_CHORD_MIN_CONTRACTION = 0.5


def _base_state(
    m: _DenseModel,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    vm_set: np.ndarray,
    tol: float,
    max_iter: int,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, float] | None:
    """Solve one operating point by dense Newton (from ``start`` or flat); None if it fails."""
    st = m.setup
    nb = p_spec.size
    held = np.flatnonzero(st.vm_gen >= 0)
    vm = np.ones((1, nb)) if start is None else np.abs(start)[None, :].copy()
    vm[0, held] = vm_set[st.vm_gen[held]]
    va = (m.start_angles if start is None else np.angle(start))[None, :].copy()
    slack = np.zeros(1)
    _, norm = _newton_dense(m, vm, va, slack, p_spec[None, :], q_spec_pq[None, :], tol, max_iter)
    if not norm[0] <= tol:
        return None
    return vm[0] * np.exp(1j * va[0]), float(slack[0])


def _solve_chunk(
    c: CompiledNetwork,
    m: _DenseModel,
    state: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    step_map: np.ndarray | None,
    tol: float,
    max_iter: int,
    p_set: np.ndarray,
    q_set: np.ndarray,
    s_set: np.ndarray,
) -> BatchPowerFlowResult:
    nb = c.n_bus
    n = state.shape[0]
    start = state.copy()
    iters = np.zeros(n, dtype=np.int64)
    norm = np.full(n, np.inf)
    done = np.zeros(n, dtype=bool)
    if step_map is not None:
        done, norm = _chord(
            m, state, p_spec, q_spec_pq, iters, step_map, tol, min(max_iter, _MAX_CHORD_STEPS)
        )
        # A member the chord drove away from its start begins Newton again from the start.
        lost = ~done & ~(norm < 1.0)
        state[lost] = start[lost]
    rest = np.flatnonzero(~done)
    if rest.size:
        vm_r = state[rest, nb : 2 * nb]
        va_r = state[rest, :nb]
        sl_r = state[rest, -1]
        it_r, nrm_r = _newton_dense(
            m, vm_r, va_r, sl_r, p_spec[rest], q_spec_pq[rest], tol, max_iter
        )
        state[rest, nb : 2 * nb] = vm_r
        state[rest, :nb] = va_r
        state[rest, -1] = sl_r
        iters[rest] += it_r
        norm[rest] = nrm_r
    v = state[:, nb : 2 * nb] * np.exp(1j * state[:, :nb])
    return _batch_result(
        c, m, v, state[:, -1].copy(), norm <= tol, iters, norm, p_set, q_set, s_set
    )


def _dense_jacobian(m: _DenseModel, v: np.ndarray) -> np.ndarray:
    """The Newton Jacobian of one operating point (nb,) -> (n_eq, n_eq); see ``_newton_dense``."""
    return _jacobian_stack(m, v[None, :], (v * np.conj(m.ybus @ v))[None, :])[0]


def _jacobian_stack(m: _DenseModel, v: np.ndarray, s: np.ndarray) -> np.ndarray:
    st = m.setup
    nb = v.shape[1]
    nonref, pq = st.nonref, st.pq
    nn, npq = nonref.size, pq.size
    vm = np.abs(v)
    # G_ij = V_i conj(Y_ij V_j); dS/dVa = j(diag(S) - G); dS/dVm = G / |V_j| + diag(S / |V|)
    g = v[:, :, None] * np.conj(m.ybus[None, :, :] * v[:, None, :])
    diag = np.arange(nb)
    ds_dva = -1j * g
    ds_dva[:, diag, diag] += 1j * s
    ds_dvm = g / vm[:, None, :]
    ds_dvm[:, diag, diag] += s / vm
    jac = np.empty((v.shape[0], m.n_eq, m.n_eq))
    jac[:, :nb, :nn] = ds_dva[:, :, nonref].real
    jac[:, :nb, nn : nn + npq] = ds_dvm[:, :, pq].real
    jac[:, nb:, :nn] = ds_dva[:, pq][:, :, nonref].imag
    jac[:, nb:, nn : nn + npq] = ds_dvm[:, pq][:, :, pq].imag
    # The slack column is constant: -w on the P rows, 0 on the Q rows.
    jac[:, :nb, -1] = -st.bus_weight
    jac[:, nb:, -1] = 0.0
    return jac


def _residual(
    m: _DenseModel,
    vm: np.ndarray,
    va: np.ndarray,
    slack: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mismatch vectors (B, n_eq) and the real/imaginary parts (B, 2nb) of V and of S."""
    nb = vm.shape[1]
    ef = np.empty((vm.shape[0], 2 * nb))
    e, f = ef[:, :nb], ef[:, nb:]
    np.cos(va, out=e)
    np.sin(va, out=f)
    e *= vm
    f *= vm
    cur = ef @ m.y_real
    ir, ii = cur[:, :nb], cur[:, nb:]
    pq = m.setup.pq
    out = np.empty((vm.shape[0], m.n_eq))
    p = e * ir
    p += f * ii
    q = f * ir
    q -= e * ii
    np.subtract(p, p_spec, out=out[:, :nb])
    out[:, :nb] -= m.setup.bus_weight * slack[:, None]
    np.subtract(q[:, pq], q_spec_pq, out=out[:, nb:])
    return out, ef, np.concatenate([p, q], axis=1)


def _complex(parts: np.ndarray) -> np.ndarray:
    nb = parts.shape[1] // 2
    return parts[:, :nb] + 1j * parts[:, nb:]


def _max_abs(f: np.ndarray) -> np.ndarray:
    nrm = np.max(np.abs(f), axis=1)
    nrm[~np.isfinite(nrm)] = np.inf
    return nrm


def _chord(
    m: _DenseModel,
    state: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    iters: np.ndarray,
    step_map: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Newton steps that reuse one Jacobian (at the shared warm start) for the whole batch.

    Measured on the 9-bus cases: a batched ``np.linalg.solve`` of B 14×14 systems costs
    ~2.7 µs per system per iteration, which alone caps full Newton near 100k PF/s; with the
    Jacobian frozen the step is one (B, n_eq)×(n_eq, 2nb+1) product (``step_map`` is the
    inverse Jacobian already scattered onto the full state [va, vm, slack]).  Convergence is
    linear instead of quadratic, so members whose mismatch does not at least halve per step
    leave the chord and finish with full Newton.  Updates ``state`` and ``iters`` in place;
    returns (done, norm).
    """
    nb = (state.shape[1] - 1) // 2
    n = state.shape[0]
    done = np.zeros(n, dtype=bool)
    stalled = np.zeros(n, dtype=bool)
    norm = np.full(n, np.inf)
    prev = np.full(n, np.inf)
    va, vm, slack = state[:, :nb], state[:, nb : 2 * nb], state[:, 2 * nb]
    # Whole-chunk arithmetic with masks: nearly all members converge in the same step, so
    # gathering the active ones each step would cost more than it saves.
    for k in range(max_iter + 1):
        f, _, _ = _residual(m, vm, va, slack, p_spec, q_spec_pq)
        nrm = _max_abs(f)
        running = ~(done | stalled)
        np.copyto(norm, nrm, where=running)
        done |= running & (nrm <= tol)
        stalled |= running & ~done & ~(nrm < _CHORD_MIN_CONTRACTION * prev)
        step = ~(done | stalled)
        if k == max_iter or not step.any():
            break
        np.copyto(prev, nrm, where=step)
        upd = f @ step_map
        upd *= step[:, None]
        state -= upd
        iters += step
    return done, norm


def _newton_dense(
    m: _DenseModel,
    vm: np.ndarray,
    va: np.ndarray,
    slack: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Full Newton on a stack of states, each with its own Jacobian; updates in place.

    Returns (iterations, final max mismatch) per member.
    """
    st = m.setup
    nonref, pq = st.nonref, st.pq
    nn, npq = nonref.size, pq.size
    batch = vm.shape[0]
    iters = np.zeros(batch, dtype=np.int64)
    norm = np.full(batch, np.inf)
    active = np.arange(batch)
    for it in range(max_iter + 1):
        f, v_a, s_a = _residual(
            m, vm[active], va[active], slack[active], p_spec[active], q_spec_pq[active]
        )
        v_a, s_a = _complex(v_a), _complex(s_a)
        nrm = _max_abs(f)
        norm[active] = nrm
        keep = (nrm > tol) & (nrm < _DIVERGED_MISMATCH_PU)
        if it == max_iter or not keep.any():
            break
        active, f, v_a, s_a = active[keep], f[keep], v_a[keep], s_a[keep]
        jac = _jacobian_stack(m, v_a, s_a)
        try:
            dx = np.linalg.solve(jac, -f[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            dx = _solve_each(jac, -f)
        bad = ~np.isfinite(dx).all(axis=1)
        if bad.any():
            norm[active[bad]] = np.inf
            active, dx = active[~bad], dx[~bad]
            if not active.size:
                break
        iters[active] += 1
        va[np.ix_(active, nonref)] += dx[:, :nn]
        vm[np.ix_(active, pq)] += dx[:, nn : nn + npq]
        slack[active] += dx[:, -1]
    return iters, norm


def _solve_each(jac: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Fallback when one matrix of the stack is singular: solve one by one, NaN for failures."""
    out = np.full(rhs.shape, np.nan)
    for k in range(jac.shape[0]):
        with contextlib.suppress(np.linalg.LinAlgError):
            out[k] = np.linalg.solve(jac[k], rhs[k])
    return out


def _batch_result(
    c: CompiledNetwork,
    m: _DenseModel,
    v: np.ndarray,
    slack: np.ndarray,
    converged: np.ndarray,
    iters: np.ndarray,
    norm: np.ndarray,
    p_set: np.ndarray,
    q_set: np.ndarray,
    s_set: np.ndarray,
) -> BatchPowerFlowResult:
    st = m.setup
    s_calc = v * np.conj(v @ m.ybus.T)
    i_f = v @ m.yf.T
    i_t = v @ m.yt.T
    s_f = v[:, c.branch_from] * np.conj(i_f)
    s_t = v[:, c.branch_to] * np.conj(i_t)
    rated = c.rate_pu > 0
    loading = np.where(
        rated, np.maximum(np.abs(i_f), np.abs(i_t)) / np.where(rated, c.rate_pu, 1.0), 0.0
    )
    return BatchPowerFlowResult(
        converged=converged,
        iterations=iters,
        max_mismatch=norm,
        vm_pu=np.abs(v),
        va_rad=np.angle(v),
        loss_pu=np.sum(s_f.real + s_t.real, axis=1),
        gen_p_pu=p_set + slack[:, None] * c.slack_weight,
        gen_q_pu=_gen_q(c, st, s_calc.imag, q_set, s_set),
        branch_loading=loading,
        slack_pu=slack,
        base_mva=c.base_mva,
    )
