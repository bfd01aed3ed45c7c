"""Consensus ADMM over per-node DistFlow subproblems (seed 001 §IV.D, eqs. 12–19).

Each node i keeps local copies ``x̃_i = (P_i, Q_i, v_i, v_π(i), P_δ(i), Q_δ(i))`` of the global
``z = (P, Q, v)``.  One iteration:

1. every node solves eq. 15 given ``z̃_i = B_i z`` and its duals ``ξ_i`` (:class:`LocalModel`);
2. the aggregator (eq. 16) averages the copies of each global entry — with over-relaxation
   ``x̂ = α x̃ + (1 − α) z̃`` when ``α ≠ 1`` (Boyd et al. 2011, §3.4.3);
3. the duals move by ``ξ ← ξ + ρ (x̂ − z̃)`` (eq. 17);
4. residuals (eq. 18) ``r = ‖x̃ − B z‖`` and ``s = ‖z − z_prev‖``; stop when ``r ≤ ε_pri`` and
   ``s ≤ ε_dual`` (eq. 19).  With ``adaptive=True`` ρ follows residual balancing (Boyd §3.4.1)
   on ``r`` and the dual residual ``ρ‖B(z − z_prev)‖``.  The duals ξ are unscaled, so they need
   no rescaling when ρ changes.

Because every global entry's duals start at zero and each update adds ``ρ(x̂ − mean x̂)``, the
duals of one entry always sum to zero, which is why the plain average (eq. 16) is the exact
z-minimization.

The aggregator state (:class:`Aggregator`) is pure numpy so the on-chain contract can mirror it in
fixed-point integers.  Subproblems run either batched (one block-separable solve for a group of
nodes — mathematically the per-node decomposition, since no constraint or objective term links
two nodes) or one node at a time, optionally in a process pool.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from gridledger.grid.conic_subproblem import ConicLocalModel
from gridledger.grid.der import NodeDers, deferrable_matrix
from gridledger.grid.dispatch import Dispatch, DispatchError, dispatch, subtree_matrix
from gridledger.grid.distflow import LocalModel, global_rows
from gridledger.grid.feeders import Feeder
from gridledger.grid.zlayout import ZLayout


@dataclass(frozen=True)
class AdmmOptions:
    rho: float = 100.0  # $/pu² (seed 001 used ρ = 100)
    max_iter: int = 100
    eps_pri: float = 1e-3  # pu, on ‖r‖₂ over all copies and hours
    eps_dual: float = 1e-3  # pu, on ‖z − z_prev‖₂
    adaptive: bool = True
    rho_per_entry: bool = False  # residual balancing per global entry and hour (else one ρ)
    rho_range: float = 1e3  # per-entry ρ stays within [ρ/range, ρ·range]
    balance_mu: float = 10.0
    balance_tau: float = 2.0
    over_relaxation: float = 1.6
    groups: int = 1  # node groups solved as one block-separable problem each (1 = all batched)
    clusters: int = 0  # > 0: agents for connected groups of nodes (not per node), see below
    workers: int = 1  # processes for the groups (1 = in this process)
    warm_start: bool = True  # initial z from subtree net loads (a flat start when False)
    v_weight: float = 1.0  # ρ on voltage copies = v_weight × ρ
    anderson_growth: float = 2.0  # reset when the residual exceeds this × the best so far
    anderson: int = 0  # memory of Anderson acceleration on (z, ξ/ρ); 0 = plain ADMM
    price_warm_start: bool = True  # initial ξ on P copies from the root's marginal cost
    flat_price: bool = True  # that marginal cost flattened over the day (see root_price_estimate)
    # subproblems as Clarabel on conic data compiled once (grid/conic_subproblem.py); False: the
    # reference path, cvxpy's DPP problem re-solved each iteration (same iterates to ~1e-5 pu)
    conic: bool = True
    # run each iteration's schedule through the AC power flow (grid/dispatch.py) and record
    # its cost: what the schedule is worth if stopped there (≈ 1–2 ms per iteration on SCE-56)
    dispatch: bool = True

    def __post_init__(self) -> None:
        if self.rho <= 0 or self.max_iter < 1 or self.eps_pri <= 0 or self.eps_dual <= 0:
            raise ValueError("rho, max_iter, eps_pri and eps_dual must be positive")
        if not 0 < self.over_relaxation < 2:
            raise ValueError(f"over_relaxation {self.over_relaxation} not in (0, 2)")
        if self.groups < 1 or self.workers < 1:
            raise ValueError("groups and workers must be ≥ 1")


@dataclass
class IterationRecord:
    iteration: int
    primal_residual: float
    dual_residual: float
    rho: float
    objective_usd: float  # sum of the agents' local costs at their copies
    elapsed_s: float = 0.0  # since the start of solve_admm (models built, first solve compiled)
    dispatch_usd: float = math.nan  # cost of running this iteration's schedule (dispatch.py)
    dispatch_feasible: bool | None = None  # whether it runs within voltage/generator limits


class Aggregator:
    """S1's arithmetic (eqs. 16–19) over all copies, given where each copy sits in z."""

    def __init__(
        self, z_rows: np.ndarray, n_global: int, z0: np.ndarray, rho: float, v_weight: float = 1.0
    ) -> None:
        self.z_rows = z_rows
        # n_global = 3·lines + 1 for a feeder; the voltage copies may carry their own weight
        layout = ZLayout((n_global - 1) // 3 + 1)
        self.weight = np.where(layout.is_v(z_rows), v_weight, 1.0)[:, None]
        k = len(z_rows)
        self.gather = sp.csr_matrix((np.ones(k), (z_rows, np.arange(k))), shape=(n_global, k))
        self.counts = np.asarray(self.gather.sum(axis=1)).ravel()
        if np.any(self.counts == 0):
            raise ValueError("a global variable has no local copy")
        self.z = z0.copy()
        self.xi = np.zeros((k, z0.shape[1]))
        self.rho = rho
        self.rho_entry = np.full(z0.shape, float(rho))  # per global entry and hour

    def rho_copies(self) -> np.ndarray:
        result: np.ndarray = self.rho_entry[self.z_rows]
        return result

    def z_tilde(self) -> np.ndarray:
        result: np.ndarray = self.z[self.z_rows]
        return result

    def state(self) -> np.ndarray:
        """(z, ξ/ρ) flattened: the fixed point that acceleration works on."""
        return np.concatenate([self.z.ravel(), self.xi.ravel() / self.rho])

    def set_state(self, u: np.ndarray) -> None:
        nz = self.z.size
        self.z = u[:nz].reshape(self.z.shape)
        self.xi = u[nz:].reshape(self.xi.shape) * self.rho

    def step(self, x_tilde: np.ndarray, alpha: float) -> tuple[float, float, float]:
        """Eqs. 16–18; return (primal r, dual s = ‖Δz‖, Boyd dual ρ‖BΔz‖)."""
        z_tilde_old = self.z_tilde()
        x_hat = alpha * x_tilde + (1 - alpha) * z_tilde_old
        z_old = self.z
        self.z = (self.gather @ x_hat) / self.counts[:, None]
        z_tilde = self.z_tilde()
        rho_c = self.rho_copies() * self.weight
        self.xi = self.xi + rho_c * (x_hat - z_tilde)
        primal = float(np.linalg.norm(x_tilde - z_tilde))
        dz = self.z - z_old
        dual = float(np.linalg.norm(dz))
        boyd_dual = float(np.linalg.norm(rho_c * dz[self.z_rows]))
        self.last_r2_entry = self.gather @ ((x_tilde - z_tilde) ** 2)
        self.last_s2_entry = self.gather @ ((rho_c * dz[self.z_rows]) ** 2)
        return primal, dual, boyd_dual

    def balance_entries(self, mu: float, tau: float, lo: float, hi: float) -> None:
        """Residual balancing per global entry and hour (Mhanna et al. 2019 style)."""
        r2, s2 = self.last_r2_entry, self.last_s2_entry
        up = r2 > mu**2 * s2
        down = s2 > mu**2 * r2
        self.rho_entry = np.clip(
            np.where(
                up, self.rho_entry * tau, np.where(down, self.rho_entry / tau, self.rho_entry)
            ),
            lo,
            hi,
        )


class AndersonAccelerator:
    """Type-II Anderson acceleration of a fixed-point map u ← g(u), with a safeguard.

    Given the last ``memory`` pairs of differences of iterates and residuals ``f = g(u) − u``, the
    next iterate is ``g(u) − ΔG γ`` with ``γ = argmin ‖f − ΔF γ‖`` (Walker & Ni 2011).  An
    extrapolation whose residual grew by more than ``growth`` over the best seen falls back to
    the plain step and clears the memory.
    """

    def __init__(self, memory: int, growth: float = 2.0) -> None:
        self.memory = memory
        self.growth = growth
        self.reset()

    def reset(self) -> None:
        self.prev_g: np.ndarray | None = None
        self.prev_f: np.ndarray | None = None
        self.dg: list[np.ndarray] = []
        self.df: list[np.ndarray] = []
        self.best = math.inf

    def update(self, u: np.ndarray, g: np.ndarray) -> np.ndarray:
        f = g - u
        norm_f = float(np.linalg.norm(f))
        if norm_f > self.growth * self.best:
            self.reset()
        self.best = min(self.best, norm_f)
        if self.prev_g is not None:
            self.dg.append(g - self.prev_g)
            self.df.append(f - self.prev_f)
            if len(self.dg) > self.memory:
                self.dg.pop(0)
                self.df.pop(0)
        self.prev_g, self.prev_f = g, f
        if not self.df:
            return g
        df = np.column_stack(self.df)
        gamma, *_ = np.linalg.lstsq(df, f, rcond=None)
        result: np.ndarray = g - np.column_stack(self.dg) @ gamma
        return result


def root_price_estimate(feeder: Feeder, z0: np.ndarray, flat: bool = True) -> np.ndarray:
    """Marginal cost of the root generator at the warm-start flows ($/MWh per hour).

    ``flat``: the price at which the generator would supply the same daily energy with storage
    flattening its marginal cost over the day (``λ = mean(b) + 2a·mean(g)``) — what the optimum
    looks like when storage is ample (seed 001's feeders have a battery at every bus)."""
    gen = feeder.ders[0].generator
    if gen is None:
        return np.zeros(feeder.horizon_h)
    children = feeder.children(0)
    root = feeder.ders[0]
    g0 = -z0[[k - 1 for k in children]].sum(axis=0) + np.array(root.load_kw) / 1000.0
    g0 -= np.array(root.solar_kw) / 1000.0
    g0 = np.clip(g0, gen.p_min_kw / 1000.0, gen.p_max_kw / 1000.0)
    lin = np.array(gen.cost_lin_usd_per_mwh)
    if flat:
        return np.full(feeder.horizon_h, lin.mean() + 2 * gen.cost_quad_usd_per_mw2h * g0.mean())
    result: np.ndarray = 2 * gen.cost_quad_usd_per_mw2h * g0 + lin
    return result


def initial_xi(
    feeder: Feeder, z_rows: np.ndarray, owner: np.ndarray, price: np.ndarray
) -> np.ndarray:
    """Duals of the P copies at a uniform price: ``ξ = −λ`` on a line's own copy, ``+λ`` on
    the parent's (at the optimum they are minus/plus the two ends' balance duals, which nearly
    agree — checked against the consensus duals of the centralized solve); zero on Q and v."""
    layout = ZLayout(feeder.n_nodes)
    xi = np.zeros((len(z_rows), feeder.horizon_h))
    is_p = layout.is_p(z_rows)
    own = is_p & (owner == layout.line_of_p(z_rows))
    xi[own] = -price
    xi[is_p & ~own] = price
    return xi


def nominal_net_load_kw(ders: NodeDers, horizon: int) -> np.ndarray:
    net = np.subtract(ders.load_kw, ders.solar_kw)
    shp = ders.shapable
    if shp is not None:
        net[shp.start_hour : shp.end_hour] += shp.energy_kwh / (shp.end_hour - shp.start_hour)
    dfr = ders.deferrable
    if dfr is not None:
        start = np.zeros(horizon)
        start[dfr.arrival_hour] = 1.0
        net += deferrable_matrix(dfr, horizon) @ np.cumsum(start)
    return net


def initial_z(feeder: Feeder) -> np.ndarray:
    """A warm start: line flows = subtree sums of each node's nominal net load, voltages by
    LinDistFlow from v_0 = 1.

    The nominal schedule is what a node would do alone: shapable energy spread evenly over its
    window, deferrable loads started on arrival, batteries idle."""
    n, horizon = feeder.n_nodes, feeder.horizon_h
    net_p = np.array([nominal_net_load_kw(d, horizon) for d in feeder.ders]) / 1000.0
    net_q = np.array([np.subtract(d.load_kvar, 0.0) for d in feeder.ders]) / 1000.0
    net_q -= np.array([d.capacitor_kvar for d in feeder.ders])[:, None] / 1000.0
    flow_p, flow_q = net_p.copy(), net_q.copy()
    depth = np.zeros(n, dtype=int)
    for i in range(1, n):
        depth[i] = depth[feeder.parent[i]] + 1
    for i in sorted(range(1, n), key=lambda k: -depth[k]):
        flow_p[feeder.parent[i]] += flow_p[i]
        flow_q[feeder.parent[i]] += flow_q[i]
    # the root sits at the top of the band when free (losses fall with voltage; seed 001 §VI)
    v = np.full(
        (n, horizon), feeder.vmax_pu**2 if feeder.root_vm_pu is None else feeder.root_vm_pu**2
    )
    for i in sorted(range(1, n), key=lambda k: depth[k]):
        # flow toward the root is -flow (our P is power into the parent)
        v[i] = v[feeder.parent[i]] - 2 * (feeder.r_pu[i] * flow_p[i] + feeder.x_pu[i] * flow_q[i])
    lo, hi = feeder.vmin_pu**2, feeder.vmax_pu**2
    return ZLayout(n).stack(-flow_p[1:], -flow_q[1:], np.clip(v, lo, hi))


@dataclass
class AdmmResult:
    objective_usd: float
    iterations: int
    converged: bool
    primal_residual: float
    dual_residual: float
    seconds: float
    z: np.ndarray
    p_mw: np.ndarray  # N × T net injections
    dlmp_usd_per_mwh: np.ndarray  # N × T, duals of the local balances
    generation_mw: np.ndarray  # N × T, generator schedules
    dispatch: Dispatch | None = None  # the last schedule run through the AC power flow
    history: list[IterationRecord] = field(default_factory=list)


@dataclass
class LocalSolutions:
    """One iteration's eq. 15 over all nodes."""

    x_tilde: np.ndarray  # stacked copies
    cost_usd: float  # sum of the local costs
    p_mw: np.ndarray  # N × T net injections
    dlmp_usd_per_mwh: np.ndarray  # N × T
    generation_mw: np.ndarray  # N × T generator outputs (zero where none)


# --- subproblem groups, in this process or in a pool -----------------------------------------

_WORKER_MODELS: dict[int, LocalModel | ConicLocalModel] = {}


@dataclass(frozen=True)
class _WorkerSetup:
    """What a worker needs to build a subproblem that the load balancing moved to it."""

    feeder: Feeder
    groups: list[list[int]]
    v_weight: float
    merge: bool
    conic: bool


_WORKER_SETUP: list[_WorkerSetup] = []  # one entry once the worker is initialised

# a subproblem's answer: (x, cost $, injections MW, DLMP $/MWh, generation MW)
_Outputs = tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]
# the same and the seconds the worker took
_TimedOutputs = tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray, float]
_Job = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # (group, z̃, ξ, ρ)


def _subproblem(
    feeder: Feeder, nodes: list[int], v_weight: float, merge: bool, conic: bool
) -> LocalModel | ConicLocalModel:
    kind = ConicLocalModel if conic else LocalModel
    return kind(feeder, nodes, v_weight=v_weight, merge_internal=merge)


def _worker_init(
    feeder: Feeder,
    groups: list[list[int]],
    indices: list[int],
    v_weight: float,
    merge: bool,
    conic: bool,
) -> None:
    # the subproblems stay resident in the worker: each iteration only ships z̃, ξ, ρ and x̃
    _WORKER_SETUP[:] = [_WorkerSetup(feeder, groups, v_weight, merge, conic)]
    for gi in indices:
        _WORKER_MODELS[gi] = _subproblem(feeder, groups[gi], v_weight, merge, conic)


def _worker_solve(gi: int, z_tilde: np.ndarray, xi: np.ndarray, rho: np.ndarray) -> _TimedOutputs:
    if gi not in _WORKER_MODELS:  # moved here by the load balancing
        (w,) = _WORKER_SETUP
        _WORKER_MODELS[gi] = _subproblem(w.feeder, w.groups[gi], w.v_weight, w.merge, w.conic)
    model = _WORKER_MODELS[gi]
    started = time.perf_counter()
    x = model.solve_admm(z_tilde, xi, rho)
    seconds = time.perf_counter() - started
    return (*_outputs(model, x), seconds)


def _outputs(model: LocalModel | ConicLocalModel, x: np.ndarray) -> _Outputs:
    return (
        x, model.cost_usd(), model.injections_mw(), model.dlmp_usd_per_mwh(),
        model.generation_mw(),
    )  # fmt: skip


def _worker_solve_many(jobs: list[_Job]) -> list[_TimedOutputs]:
    # one message per worker and iteration, not one per group: with a group per node (56 on
    # SCE-56) that cut the parent's CPU for 100 iterations from ≈ 2.0 s to ≈ 1.3 s (measured)
    return [_worker_solve(*job) for job in jobs]


def balance(seconds: list[float], n_workers: int) -> list[list[int]]:
    """Longest solve first, each to the least loaded worker (LPT, within 4/3 of the best)."""
    assign: list[list[int]] = [[] for _ in range(n_workers)]
    load = [0.0] * n_workers
    for gi in sorted(range(len(seconds)), key=lambda g: -seconds[g]):
        w = load.index(min(load))
        assign[w].append(gi)
        load[w] += seconds[gi]
    return assign


def _partition(n_nodes: int, groups: int) -> list[list[int]]:
    groups = min(groups, n_nodes)
    return [list(range(n_nodes))[g::groups] for g in range(groups)]


def tree_clusters(feeder: Feeder, clusters: int) -> list[list[int]]:
    """Cut the tree into about ``clusters`` connected groups of similar size: walking up from
    the leaves, a subtree that reaches the target size becomes a group."""
    n = feeder.n_nodes
    target = max(1, round(n / clusters))
    depth = np.zeros(n, dtype=int)
    for i in range(1, n):
        depth[i] = depth[feeder.parent[i]] + 1
    pending: dict[int, list[int]] = {i: [i] for i in range(n)}
    out: list[list[int]] = []
    for i in sorted(range(1, n), key=lambda k: -depth[k]):
        if len(pending[i]) >= target:
            out.append(sorted(pending.pop(i)))
        else:
            pending[int(feeder.parent[i])] += pending.pop(i)
    out.append(sorted(pending.pop(0)))
    return out


class SubproblemRunner:
    """Solves eq. 15 for all node groups; `solve` returns stacked x̃ and per-node outputs."""

    def __init__(self, feeder: Feeder, options: AdmmOptions) -> None:
        self.feeder = feeder
        merge = options.clusters > 0
        self.groups = (
            tree_clusters(feeder, options.clusters)
            if merge
            else _partition(feeder.n_nodes, options.groups)
        )
        self.models: list[LocalModel | ConicLocalModel] | None = None
        self.pools: list[ProcessPoolExecutor] = []
        layouts = (
            [LocalModel(feeder, g, admm=False).layout for g in self.groups]
            if (options.workers > 1)
            else None
        )
        if options.workers > 1:
            assert layouts is not None
            n_workers = min(options.workers, len(self.groups))
            # by size until solve times are known (groups differ in size); the conic models
            # give the same x̃ whatever they solved before, so a group may move between workers
            self.assign = balance([float(len(g)) for g in self.groups], n_workers)
            self.rebalance_after = 2 if options.conic else 0  # iteration 1 builds the solvers
            self.calls = 0
            # one single-process pool per worker so a group always meets its compiled model
            for idx in self.assign:
                pool = ProcessPoolExecutor(
                    max_workers=1,
                    initializer=_worker_init,
                    initargs=(feeder, self.groups, idx, options.v_weight, merge, options.conic),
                )
                self.pools.append(pool)
            self.z_rows_per_group = [lay.z_rows for lay in layouts]
            self.owner_per_group = [lay.owner for lay in layouts]
        else:
            self.models = [
                _subproblem(feeder, g, options.v_weight, merge, options.conic) for g in self.groups
            ]
            self.z_rows_per_group = [m.layout.z_rows for m in self.models]
            self.owner_per_group = [m.layout.owner for m in self.models]
        self.offsets = np.cumsum([0] + [len(r) for r in self.z_rows_per_group])
        self.z_rows = np.concatenate(self.z_rows_per_group)
        self.owner = np.concatenate(self.owner_per_group)

    def solve(self, z_tilde: np.ndarray, xi: np.ndarray, rho: np.ndarray) -> LocalSolutions:
        """All groups' eq. 15, stacked."""
        n, horizon = self.feeder.n_nodes, self.feeder.horizon_h
        x = np.zeros_like(z_tilde)
        p_mw = np.zeros((n, horizon))
        dlmp = np.zeros((n, horizon))
        gen = np.zeros((n, horizon))
        cost = 0.0
        parts = [slice(self.offsets[g], self.offsets[g + 1]) for g in range(len(self.groups))]
        if self.models is not None:
            outputs = [
                _outputs(m, m.solve_admm(z_tilde[s], xi[s], rho[s]))
                for m, s in zip(self.models, parts, strict=True)
            ]
        else:
            futures = [
                pool.submit(
                    _worker_solve_many,
                    [(gi, z_tilde[parts[gi]], xi[parts[gi]], rho[parts[gi]]) for gi in idx],
                )
                for pool, idx in zip(self.pools, self.assign, strict=True)
            ]
            by_group: dict[int, _TimedOutputs] = {}
            for future, idx in zip(futures, self.assign, strict=True):
                by_group.update(zip(idx, future.result(), strict=True))
            timed = [by_group[gi] for gi in range(len(self.groups))]
            outputs = [o[:5] for o in timed]
            self.calls += 1
            self.last_seconds = [o[-1] for o in timed]
            if self.calls == self.rebalance_after:
                # measured: on SCE-56 with 8 clusters one 15-node cluster takes half the time
                self.assign = balance([o[-1] for o in timed], len(self.pools))
        for g, (xg, cg, pg, dg, gg) in enumerate(outputs):
            x[parts[g]] = xg
            cost += cg
            p_mw[self.groups[g]] = pg
            dlmp[self.groups[g]] = dg
            gen[self.groups[g]] = gg
        return LocalSolutions(x, cost, p_mw, dlmp, gen)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown()


def solve_admm(
    feeder: Feeder,
    options: AdmmOptions | None = None,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> AdmmResult:
    """Run ADMM to the stopping rule (eq. 19) or ``max_iter``."""
    options = options or AdmmOptions()
    started = time.perf_counter()
    runner = SubproblemRunner(feeder, options)
    try:
        n_global = global_rows(feeder.n_nodes)
        z0 = initial_z(feeder) if options.warm_start else _flat_z(feeder)
        agg = Aggregator(runner.z_rows, n_global, z0, options.rho, options.v_weight)
        if options.price_warm_start:
            agg.xi = initial_xi(
                feeder,
                runner.z_rows,
                runner.owner,
                root_price_estimate(feeder, z0, options.flat_price),
            )
        history: list[IterationRecord] = []
        converged = False
        primal = dual = math.inf
        accel = None
        if options.anderson:
            accel = AndersonAccelerator(options.anderson, options.anderson_growth)
        subtree = subtree_matrix(feeder.parent)
        ran: Dispatch | None = None
        for k in range(1, options.max_iter + 1):
            local = runner.solve(agg.z_tilde(), agg.xi, agg.rho_copies())
            rho_used = agg.rho
            u_prev = agg.state() if accel is not None else None
            primal, dual, boyd_dual = agg.step(local.x_tilde, options.over_relaxation)
            if options.dispatch:
                try:
                    ran = run_schedule(feeder, local, agg.z, subtree)
                except DispatchError:
                    ran = None  # a schedule the feeder cannot carry: recorded as NaN, no stop
            if accel is not None and u_prev is not None:
                agg.set_state(accel.update(u_prev, agg.state()))
            record = IterationRecord(
                k,
                primal,
                dual,
                rho_used,
                local.cost_usd,
                time.perf_counter() - started,
                ran.cost_usd if ran is not None else math.nan,
                ran.feasible if ran is not None else (False if options.dispatch else None),
            )
            history.append(record)
            if on_iteration is not None:
                on_iteration(record)
            if primal <= options.eps_pri and dual <= options.eps_dual:
                converged = True
                break
            if options.adaptive and options.rho_per_entry:
                agg.balance_entries(
                    options.balance_mu,
                    options.balance_tau,
                    options.rho / options.rho_range,
                    options.rho * options.rho_range,
                )
            elif options.adaptive:
                rho_before = agg.rho
                if primal > options.balance_mu * boyd_dual:
                    agg.rho *= options.balance_tau
                elif boyd_dual > options.balance_mu * primal:
                    agg.rho /= options.balance_tau
                agg.rho_entry[:] = agg.rho
                if accel is not None and agg.rho != rho_before:
                    accel.reset()
    finally:
        runner.close()
    return AdmmResult(
        objective_usd=local.cost_usd,
        iterations=len(history),
        converged=converged,
        primal_residual=primal,
        dual_residual=dual,
        seconds=time.perf_counter() - started,
        z=agg.z,
        p_mw=local.p_mw,
        dlmp_usd_per_mwh=local.dlmp_usd_per_mwh,
        generation_mw=local.generation_mw,
        dispatch=ran,
        history=history,
    )


def run_schedule(
    feeder: Feeder, local: LocalSolutions, z: np.ndarray, subtree: np.ndarray | None = None
) -> Dispatch:
    """The iteration's schedule as the feeder would run it: the nodes' injections, the root's
    generator as the slack, the substation voltage from the root's entry of the averaged z
    (moved by the DSO only as far as the band requires)."""
    return dispatch(
        feeder,
        local.p_mw,
        local.generation_mw[0],
        local.cost_usd,
        ZLayout(feeder.n_nodes).root_v(z),
        subtree=subtree,
    )


def _flat_z(feeder: Feeder) -> np.ndarray:
    return ZLayout(feeder.n_nodes).flat(feeder.horizon_h)


def default_options(
    max_iter: int = 100, rho: float | None = None, workers: int = 2, clusters: int = 0
) -> AdmmOptions:
    """ρ = 50 $/pu² (10 with clusters), α = 1.6, fixed ρ (so the contract runs the same
    iterations), one subproblem per node (or per cluster) in ``workers`` processes: measured
    faster than one batched solve on 2 cores (see bench/admm.py)."""
    return AdmmOptions(
        rho=rho if rho is not None else (10.0 if clusters else 50.0),
        max_iter=max_iter,
        eps_pri=1e-3,
        eps_dual=1e-3,
        adaptive=False,
        over_relaxation=1.6,
        groups=1_000_000,  # capped at the number of nodes: one subproblem per node
        workers=workers,
        clusters=clusters,
    )
