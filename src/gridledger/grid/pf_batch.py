"""Batched AC power flow: many operating points of one small network in one call.

Used by the reactive OPF's metaheuristics to evaluate a whole population at once.  Same
formulation as the single solve (:mod:`gridledger.grid.powerflow`), dense numpy arithmetic.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from .compiled import CompiledNetwork
from .network import Network, RegulatorControl
from .pf_setup import (
    DIVERGED_MISMATCH_PU,
    Setup,
    as_compiled,
    bincount_last,
    check_batch,
    generator_q,
    make_setup,
    start_angles,
)
from .results import BatchPowerFlowResult


@dataclass(frozen=True)
class _DenseModel:
    """Dense per-unit matrices of a compiled network, cached per (network, control mode)."""

    ybus: np.ndarray
    yf: np.ndarray
    yt: np.ndarray
    setup: Setup
    n_eq: int  # equations = unknowns: nb active balances + npq reactive balances
    # [e f] @ y_real = [Re I, Im I] for V = e + jf: real arithmetic is ~3x faster than complex
    y_real: np.ndarray
    # (n_eq, 2nb+1) 0/1: places a Newton step [dva_nonref, dvm_pq, dslack] on [va, vm, slack]
    scatter: np.ndarray
    start_angles: np.ndarray  # (nb,) flat-start angles through phase shifters
    weighted_buses: np.ndarray  # buses that take a share of the slack power


_DENSE_CACHE: dict[tuple[int, str], tuple[CompiledNetwork, _DenseModel]] = {}


def _dense(c: CompiledNetwork, control: RegulatorControl) -> _DenseModel:
    key = (id(c), control)
    hit = _DENSE_CACHE.get(key)
    if hit is not None and hit[0] is c:
        return hit[1]
    st = make_setup(c, control)
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
        start_angles=start_angles(c),
        weighted_buses=np.flatnonzero(st.bus_weight),
    )
    if len(_DENSE_CACHE) > 64:
        _DENSE_CACHE.clear()
    _DENSE_CACHE[key] = (c, model)
    return model


def _scatter(st: Setup, nb: int) -> np.ndarray:
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
    regulator_control: RegulatorControl | None = None,
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
    is only a dev dependency): on 9 buses this kernel ran 1.3–1.8× lightsim2grid's one-thread C++
    ``InjectionSweep`` and 10–14× a Python loop over its ``ac_pf``, because all members share one
    Jacobian factorisation (chord steps, see ``_chord``) and the per-member work is a few small
    dense products.  For one big network use ``run_pf`` (sparse); memory here is O(B·n) plus
    O(B·n²) for the members that fall back to full Newton.
    """
    c = as_compiled(compiled)
    control = c.regulator_control if regulator_control is None else regulator_control
    batch = _batch_size((gen_vm, gen_q, svc_q, gen_p), batch_size)
    if not (tol > 0 and max_iter >= 1):
        raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    sets = _SetPoints.check(c, batch, gen_vm, gen_q, gen_p, svc_q)
    m = _dense(c, control)
    p_spec, q_spec_pq = _specified_injections(c, m.setup, sets)
    per_member, shared = _warm_start(v0, batch, c.n_bus)
    base = _chord_base(m, shared, per_member, p_spec, q_spec_pq, sets.vm, tol, max_iter)
    state = _start_state(m, sets.vm, per_member, base, batch)
    step_map = _chord_step_map(m, base) if chord else None
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
                sets.p[lo:hi],
                sets.q[lo:hi],
                sets.svc_q[lo:hi],
            )
        )
    return _joined(chunks, c.base_mva)


def _joined(chunks: list[BatchPowerFlowResult], base_mva: float) -> BatchPowerFlowResult:
    """One result from the chunks' results, member order kept."""
    arrays = {
        f.name: np.concatenate([getattr(ch, f.name) for ch in chunks])
        for f in dataclasses.fields(BatchPowerFlowResult)
        if f.name != "base_mva"
    }
    return BatchPowerFlowResult(base_mva=base_mva, **arrays)


def _batch_size(arrays: tuple[Any, ...], batch_size: int | None) -> int:
    """``B``: the first dimension of the 2-D set-point arrays, or ``batch_size``; they agree."""
    sizes = {np.asarray(a).shape[0] for a in arrays if a is not None and np.asarray(a).ndim == 2}
    if batch_size is not None:
        sizes.add(int(batch_size))
    if len(sizes) > 1:
        raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
    batch = sizes.pop() if sizes else 1
    if batch < 1:
        raise ValueError(f"batch size must be at least 1, got {batch}")
    return batch


@dataclass(frozen=True)
class _SetPoints:
    """Every member's set-points, (B, n) pu: regulator voltages, reactive and active
    injections of the generators, SVC outputs."""

    vm: np.ndarray
    q: np.ndarray
    p: np.ndarray
    svc_q: np.ndarray

    @staticmethod
    def check(
        c: CompiledNetwork, batch: int, gen_vm: Any, gen_q: Any, gen_p: Any, svc_q: Any
    ) -> _SetPoints:
        ng, ns = c.gen_bus.size, c.svc_bus.size
        vm_set = check_batch("gen_vm", gen_vm, ng, c.gen_vm, batch)
        if np.any(vm_set <= 0):
            raise ValueError("gen_vm must be positive")
        q_set = check_batch("gen_q", gen_q, ng, c.gen_q, batch)
        p_set = check_batch("gen_p", gen_p, ng, c.gen_p, batch)
        s_set = check_batch("svc_q", svc_q, ns, c.svc_q, batch)
        return _SetPoints(vm_set, q_set, p_set, s_set)


def _specified_injections(
    c: CompiledNetwork, st: Setup, sets: _SetPoints
) -> tuple[np.ndarray, np.ndarray]:
    """Specified injections (B, nb) real, and (B, npq) reactive at the PQ buses: real and
    reactive apart (real arithmetic is cheaper)."""
    nb = c.n_bus
    qg = np.where(st.q_fixed_gen, sets.q, 0.0)
    p_spec = bincount_last(c.gen_bus, sets.p, nb) - c.load_p
    q_spec = bincount_last(c.gen_bus, qg, nb) - c.load_q
    if c.svc_bus.size:
        q_spec = q_spec + bincount_last(c.svc_bus, sets.svc_q, nb)
    return p_spec, np.ascontiguousarray(q_spec[:, st.pq])


def _warm_start(
    v0: np.ndarray | None, batch: int, nb: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The caller's ``v0`` as (one start per member, or one shared start), checked."""
    if v0 is None:
        return None, None
    v0 = np.asarray(v0, dtype=complex)
    per_member = shared = None
    if v0.shape == (batch, nb) and batch > 1:
        per_member = v0
    elif v0.shape in ((nb,), (1, nb)):
        shared = v0.reshape(nb)
    else:
        raise ValueError(f"v0 must have shape ({nb},) or ({batch}, {nb}), got {v0.shape}")
    if not np.isfinite(v0).all() or np.any(np.abs(v0) == 0):
        raise ValueError("v0 must be finite and non-zero")
    return per_member, shared


def _chord_base(
    m: _DenseModel,
    shared: np.ndarray | None,
    per_member: np.ndarray | None,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    vm_set: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, float] | None:
    """(voltages, slack) where the chord Jacobian is taken and members without their own
    ``v0`` start; None when that power flow does not converge."""
    if shared is not None:
        # The caller's warm start (typically the current operating point): no extra solve per
        # call, which matters for the small populations (20-50) of the metaheuristics.
        return shared, 0.0
    # The power flow at the batch's mean set-points.
    return _base_state(
        m,
        p_spec.mean(axis=0),
        q_spec_pq.mean(axis=0),
        vm_set.mean(axis=0),
        tol,
        max_iter,
        None if per_member is None else per_member.mean(axis=0),
    )


def _start_state(
    m: _DenseModel,
    vm_set: np.ndarray,
    per_member: np.ndarray | None,
    base: tuple[np.ndarray, float] | None,
    batch: int,
) -> np.ndarray:
    """Full state per member: [va (nb), vm (nb), slack]; the solvers update it in place.
    Members start from their own ``v0``, else the shared base state, else a flat start."""
    st, nb = m.setup, m.start_angles.size
    if per_member is not None:
        v0 = per_member
    elif base is not None:
        v0 = base[0]
    else:
        v0 = np.exp(1j * m.start_angles)
    v0 = np.broadcast_to(v0, (batch, nb))
    held = np.flatnonzero(st.vm_gen >= 0)
    state = np.empty((batch, 2 * nb + 1))
    state[:, :nb] = np.angle(v0)
    state[:, nb : 2 * nb] = np.abs(v0)
    state[:, nb + held] = vm_set[:, st.vm_gen[held]]
    state[:, -1] = 0.0 if base is None else base[1]
    return state


def _chord_step_map(m: _DenseModel, base: tuple[np.ndarray, float] | None) -> np.ndarray | None:
    """The shared chord Jacobian's inverse, mapped onto the state (None: no base state, or a
    singular Jacobian; the members then take full Newton steps)."""
    if base is None:
        return None
    jac0 = _dense_jacobian(m, base[0])
    with contextlib.suppress(np.linalg.LinAlgError):
        return np.asarray(np.linalg.inv(jac0).T @ m.scatter)
    return None


# Members solved together: small enough that the (chunk, n) temporaries stay in cache, large
# enough that numpy's per-call overhead is spread thin (measured on 9 buses: 1024 is ~2x faster
# per power flow than one 10,000-member block).
_CHUNK = 1024
# Chord steps before a member that still converges slowly is handed to full Newton.
_MAX_CHORD_STEPS = 12
# A chord member must cut its mismatch at least by this factor per step, or it goes to Newton.
_CHORD_MIN_CONTRACTION = 0.5
_NEWTON_STACK_BYTES = 64 * 2**20


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
    # Full Newton holds a (members, n_eq, n_eq) Jacobian stack and (members, nb, nb) complex
    # temporaries: bound them to ~_NEWTON_STACK_BYTES (a few members at a time on case300).
    group = max(1, _NEWTON_STACK_BYTES // (8 * m.n_eq * m.n_eq + 48 * nb * nb))
    pending = np.flatnonzero(~done)
    for lo in range(0, pending.size, group):
        rest = pending[lo : lo + group]
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
    result: np.ndarray = _jacobian_stack(m, v[None, :], (v * np.conj(m.ybus @ v))[None, :])[0]
    return result


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


@overload
def _residual(
    m: _DenseModel,
    vm: np.ndarray,
    va: np.ndarray,
    slack: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    with_s: Literal[True] = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@overload
def _residual(
    m: _DenseModel,
    vm: np.ndarray,
    va: np.ndarray,
    slack: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    with_s: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...


def _residual(
    m: _DenseModel,
    vm: np.ndarray,
    va: np.ndarray,
    slack: np.ndarray,
    p_spec: np.ndarray,
    q_spec_pq: np.ndarray,
    with_s: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mismatch vectors (B, n_eq), the real/imaginary parts (B, 2nb) of V and (``with_s``) of S.

    Written to allocate little: this is the chord loop's whole per-step cost.
    """
    nb = vm.shape[1]
    ef = np.empty((vm.shape[0], 2 * nb))
    e, f = ef[:, :nb], ef[:, nb:]
    np.cos(va, out=e)
    np.sin(va, out=f)
    e *= vm
    f *= vm
    cur = ef @ m.y_real
    ir, ii = cur[:, :nb], cur[:, nb:]
    out = np.empty((vm.shape[0], m.n_eq))
    p = out[:, :nb]
    np.multiply(e, ir, out=p)
    p += f * ii
    q = f * ir
    q -= e * ii
    s_parts = np.concatenate([p, q], axis=1) if with_s else None
    p -= p_spec
    w = m.setup.bus_weight
    weighted = m.weighted_buses
    p[:, weighted] -= w[weighted] * slack[:, None]
    np.subtract(q[:, m.setup.pq], q_spec_pq, out=out[:, nb:])
    return out, ef, s_parts


def _complex(parts: np.ndarray) -> np.ndarray:
    nb = parts.shape[1] // 2
    return parts[:, :nb] + 1j * parts[:, nb:]


def _max_abs(f: np.ndarray) -> np.ndarray:
    nrm: np.ndarray = np.max(np.abs(f), axis=1)
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
        f, _, _ = _residual(m, vm, va, slack, p_spec, q_spec_pq, with_s=False)
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
        keep = (nrm > tol) & (nrm < DIVERGED_MISMATCH_PU)
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
        gen_q_pu=generator_q(c, st, s_calc.imag, q_set, s_set),
        branch_loading=loading,
        slack_pu=slack,
        base_mva=c.base_mva,
    )
