"""What a power flow solves for, shared by the single and the batched kernels.

For one network and one regulator-control mode: bus types and index sets, which generator sets
each bus' voltage, how the slack power and a bus' free reactive power are shared, the
specified injections, the flat start, and the checks on caller-supplied set-points.  The
formulation itself is described in :mod:`gridledger.grid.powerflow`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .compiled import BUS_PQ, BUS_PV, BUS_REF, CompiledNetwork, compile_network
from .network import GenRole, Network, RegulatorControl

# Above this the iterate is diverging: stop early rather than iterate on overflowing numbers.
DIVERGED_MISMATCH_PU = 1e10


@dataclass(frozen=True)
class Setup:
    """Bus types and index sets of one network under one regulator-control mode."""

    bus_type: np.ndarray  # (nb,) for this control mode
    ref: int
    pv: np.ndarray
    pq: np.ndarray
    nonref: np.ndarray  # every bus but ref, ascending
    vm_gen: np.ndarray  # (nb,) index of the generator whose gen_vm sets the bus voltage, -1: none
    q_fixed_gen: np.ndarray  # (ng,) bool: generator injects its gen_q in this mode
    bus_weight: np.ndarray  # (nb,) share of the slack power each bus receives
    q_share: np.ndarray  # (ng,) share of its bus' free Q each voltage-holding generator takes


def make_setup(c: CompiledNetwork, control: RegulatorControl) -> Setup:
    """``"vm"``: slack and regulator generators hold their voltage; ``"q"``: only the slack."""
    if control not in ("vm", "q"):
        raise ValueError(f"regulator_control must be 'vm' or 'q', got {control!r}")
    role = c.gen_role
    holds_v = role == GenRole.SLACK if control == "q" else role != GenRole.PQ
    return setup_from_holds(c, holds_v)


def setup_from_holds(c: CompiledNetwork, holds_v: np.ndarray) -> Setup:
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
    return Setup(
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


def start_angles(c: CompiledNetwork) -> np.ndarray:
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
    # The angle step along each directed bus pair, V_to ≈ V_from · e^{-j shift}; where parallel
    # branches disagree the first branch's counts. Arrays, not a dict filled branch by branch:
    # that loop took 110 ms on a 5,483-bus grid, and every compiled network pays it once.
    rad = np.deg2rad(shift)
    src = np.column_stack([f, t]).ravel()  # branch k: (f, t) then (t, f)
    dst = np.column_stack([t, f]).ravel()
    value = np.column_stack([-rad, rad]).ravel()
    keys, first = np.unique(src.astype(np.int64) * nb + dst, return_index=True)
    walk = order[1:]
    step = value[first[np.searchsorted(keys, pred[walk].astype(np.int64) * nb + walk)]]
    angle = [0.0] * nb
    parent, steps = pred[walk].tolist(), step.tolist()
    for b, a, d in zip(walk.tolist(), parent, steps, strict=True):  # in BFS order: parent first
        angle[b] = angle[a] + d
    return np.array(angle)


def as_compiled(net: Network | CompiledNetwork) -> CompiledNetwork:
    if isinstance(net, CompiledNetwork):
        return net
    if isinstance(net, Network):
        return compile_network(net)
    raise TypeError(f"expected a Network or CompiledNetwork, got {type(net).__name__}")


def check_vector(name: str, value: Any, n: int, default: np.ndarray) -> np.ndarray:
    if value is None:
        return default
    arr = np.asarray(value, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries at {np.flatnonzero(~np.isfinite(arr))}")
    return arr


def check_batch(name: str, value: Any, n: int, default: np.ndarray, batch: int) -> np.ndarray:
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


def specified_injection(
    c: CompiledNetwork, st: Setup, p_set: np.ndarray, q_set: np.ndarray, s_set: np.ndarray
) -> np.ndarray:
    nb = c.n_bus
    p = np.bincount(c.gen_bus, weights=p_set, minlength=nb) - c.load_p
    qg = np.where(st.q_fixed_gen, q_set, 0.0)
    q = np.bincount(c.gen_bus, weights=qg, minlength=nb) - c.load_q
    if c.svc_bus.size:
        q = q + np.bincount(c.svc_bus, weights=s_set, minlength=nb)
    result: np.ndarray = p + 1j * q
    return result


def generator_q(
    c: CompiledNetwork, st: Setup, s_calc_q: np.ndarray, q_set: np.ndarray, s_set: np.ndarray
) -> np.ndarray:
    """Generator Q: set-point for fixed-Q units, a share of the bus' free Q for the others.

    Works on (nb,) or (B, nb) bus arrays; ``q_set``/``s_set`` broadcast the same way.
    """
    nb = c.n_bus
    fixed_q = np.where(st.q_fixed_gen, q_set, 0.0)
    other = bincount_last(c.gen_bus, fixed_q, nb) - c.load_q
    if c.svc_bus.size:
        other = other + bincount_last(c.svc_bus, s_set, nb)
    free = s_calc_q - other  # what the voltage-holding generators of each bus supply
    return np.where(st.q_fixed_gen, q_set, free[..., c.gen_bus] * st.q_share)


def bincount_last(idx: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """``np.bincount`` along the last axis of a 1-D or 2-D ``weights``."""
    if weights.ndim == 1:
        return np.bincount(idx, weights=weights, minlength=n)
    onehot = np.zeros((idx.size, n))
    onehot[np.arange(idx.size), idx] = 1.0
    return weights @ onehot
