"""Branch-flow (DistFlow) OPF with the second-order-cone relaxation (seed 001 §IV.A–C).

Conventions (per unit on 1 MVA, hourly steps; cost in $, so duals of power balances are $/MWh):

* ``P[i], Q[i]`` — power that line ``(i, π(i))`` delivers *into the parent* π(i) (receiving
  end), so node i's balance is ``p_i = P_i + r_i ℓ_i − Σ_{k∈δ(i)} P_k`` (seed eq. 1a) and the
  voltage drop is ``v_i = v_π(i) + 2(r_i P_i + x_i Q_i) + |z_i|² ℓ_i`` with
  ``ℓ_i v_π(i) = P_i² + Q_i²``.  The seed mixes the receiving-end balance (1a) with the
  sending-end drop (1c); with one end used consistently the equations are exact.  The
  equality ``ℓ v = P² + Q²`` is relaxed to the rotated cone ``ℓ v ≥ P² + Q²`` (eq. 2);
  :func:`relaxation_gap` measures how tight it is.
* ``v = |V|²`` with ``vmin² ≤ v ≤ vmax²`` (eq. 3); shunt capacitors inject ``b·v`` (exact).
* DER devices enter each node's net injection ``p_i = g_i + solar_i + d^b_i − c^b_i − load_i −
  s_i − Φ_i d_i`` (eqs. 4–9); controllable loads run at unity power factor (assumed).

:class:`LocalModel` builds the problem of any *subset* of nodes with the node's own copies of its
coupling variables (seed eq. 12): ``x̃_i = (P_i, Q_i, v_i, v_π(i), P_δ(i), Q_δ(i))``.  No
constraint links two nodes, so the model of a subset is block-separable: solving it equals
solving every node's problem on its own.  The centralized reference is the model of all nodes
plus the consensus constraints ``x̃ = B z``; the ADMM subproblem is the same model with the
augmented-Lagrangian terms (eq. 15) as DPP parameters, compiled once and re-solved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from gridledger.grid.der import KW_PER_PU, NodeDers, deferrable_bounds, deferrable_matrix
from gridledger.grid.feeders import Feeder
from gridledger.grid.zlayout import ZLayout


class ScheduleError(RuntimeError):
    """The solver did not reach an optimal solution; the message gives its status."""


def _selector(rows: list[int], cols: list[int], n_rows: int, n_cols: int) -> sp.csr_matrix:
    data = np.ones(len(rows))
    return sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))


@dataclass(frozen=True)
class CouplingLayout:
    """Where each row of a subset's stacked copies ``x̃`` (K × T) sits in the global ``z``.

    Global ``z`` has ``3n + 1`` rows (n lines): ``P_1..P_n``, ``Q_1..Q_n``, ``v_0..v_n``.
    """

    z_rows: np.ndarray  # for each row of x̃, its row in z
    owner: np.ndarray  # for each row of x̃, the node holding that copy


def global_rows(n_nodes: int) -> int:
    return ZLayout(n_nodes).n_rows


class LocalModel:
    """The DistFlow + DER model of a subset of nodes with local coupling copies."""

    def __init__(
        self,
        feeder: Feeder,
        nodes: list[int] | None = None,
        admm: bool = True,
        v_weight: float = 1.0,
        merge_internal: bool = False,
    ) -> None:
        self.feeder = feeder
        n_nodes, horizon = feeder.n_nodes, feeder.horizon_h
        self.nodes = sorted(range(n_nodes) if nodes is None else nodes)
        nodes_s = self.nodes
        pos = {node: i for i, node in enumerate(nodes_s)}
        own_lines = [i for i in nodes_s if i != 0]  # R
        child_lines = [k for k in range(1, n_nodes) if int(feeder.parent[k]) in pos]  # C
        self.own_lines, self.child_lines = own_lines, child_lines
        ns, nr, nc = len(nodes_s), len(own_lines), len(child_lines)
        parent = feeder.parent
        r = feeder.r_pu[own_lines][:, None]
        x = feeder.x_pu[own_lines][:, None]
        shape = (ns, horizon)

        self.P = cp.Variable((nr, horizon), name="P")
        self.Q = cp.Variable((nr, horizon), name="Q")
        self.ell = cp.Variable((nr, horizon), nonneg=True, name="l")
        self.v_par = cp.Variable((nr, horizon), name="v_par")
        self.v = cp.Variable(shape, name="v")
        self.P_ch = cp.Variable((nc, horizon), name="P_ch")
        self.Q_ch = cp.Variable((nc, horizon), name="Q_ch")
        own_sel = _selector([pos[i] for i in own_lines], list(range(nr)), ns, nr)
        ch_sel = _selector([pos[int(parent[k])] for k in child_lines], list(range(nc)), ns, nc)

        ders = [feeder.ders[i] for i in nodes_s]
        load_p = np.array([d.load_kw for d in ders]) / KW_PER_PU
        load_q = np.array([d.load_kvar for d in ders]) / KW_PER_PU
        solar = np.array([d.solar_kw for d in ders]) / KW_PER_PU
        cap_b = np.array([d.capacitor_kvar for d in ders])[:, None] / KW_PER_PU
        cons: list[cp.Constraint] = []
        p_inj = solar - load_p
        q_inj = -load_q + cp.multiply(cap_b, self.v) if np.any(cap_b) else -load_q
        self.cost_terms: list[cp.Expression] = []

        p_inj, q_inj = self._add_generators(ders, horizon, cons, p_inj, q_inj)
        # each block returns its injection (or consumption) per node, None when it has no unit
        if (battery := self._add_batteries(ders, horizon, cons)) is not None:
            p_inj = p_inj + battery
        if (shapable := self._add_shapable(ders, horizon, cons)) is not None:
            p_inj = p_inj - shapable
        if (deferrable := self._add_deferrable(ders, horizon, cons)) is not None:
            p_inj = p_inj - deferrable
        self.p_inj, self.q_inj = p_inj, q_inj

        self._add_network(r, x, own_sel, ch_sel, pos, p_inj, q_inj, cons)
        if merge_internal:
            self._merge_internal(pos, cons)
        self.constraints = cons
        self.x_tilde = cp.vstack(
            [b for b in (self.P, self.Q, self.v, self.v_par, self.P_ch, self.Q_ch) if b.shape[0]]
        )
        zl = ZLayout(n_nodes)
        self.layout = self._coupling_layout(zl)
        z_rows = self.layout.z_rows
        # penalty weight per copy: voltage copies may be tied harder than flows (ρ_v = w ρ)
        self.weight = np.where(zl.is_v(z_rows), v_weight, 1.0)[:, None]
        self.cost = cp.sum(cp.hstack(self.cost_terms)) if self.cost_terms else cp.Constant(0.0)
        self.problem: cp.Problem | None = None
        if admm:
            self.lin = cp.Parameter((len(z_rows), horizon), name="xi_minus_rho_z")
            # per-copy penalty (entry-wise ρ); enters as its square root so the problem is DPP
            self.sqrt_rho = cp.Parameter((len(z_rows), horizon), nonneg=True, name="sqrt_rho")
            objective = (
                self.cost
                + cp.sum(cp.multiply(self.lin, self.x_tilde))
                + cp.sum_squares(cp.multiply(self.sqrt_rho, self.x_tilde)) / 2
            )
            self.problem = cp.Problem(cp.Minimize(objective), self.constraints)

    # --- the blocks of the model, built in a fixed order (the variables' order fixes the
    # solver's problem matrix, and so the last bits of every schedule that goes on chain) ---

    def _add_generators(
        self, ders: list[NodeDers], horizon: int, cons: list[cp.Constraint], p_inj: Any, q_inj: Any
    ) -> tuple[Any, Any]:
        """Dispatchable generators: P and Q within limits, quadratic cost (seed 001 eq. 5)."""
        ns = len(ders)
        gen_nodes = [i for i, d in enumerate(ders) if d.generator is not None]
        self.gen_nodes = [self.nodes[i] for i in gen_nodes]
        self.g = None
        if not gen_nodes:
            return p_inj, q_inj
        gens = [dev for i in gen_nodes if (dev := ders[i].generator) is not None]
        self.g = cp.Variable((len(gen_nodes), horizon), name="g")
        self.qg = cp.Variable((len(gen_nodes), horizon), name="qg")
        sel = _selector(gen_nodes, list(range(len(gen_nodes))), ns, len(gen_nodes))
        lo = np.array([[g.p_min_kw] for g in gens]) / KW_PER_PU
        hi = np.array([[g.p_max_kw] for g in gens]) / KW_PER_PU
        qlo = np.array([[g.q_min_kvar] for g in gens]) / KW_PER_PU
        qhi = np.array([[g.q_max_kvar] for g in gens]) / KW_PER_PU
        cons += [self.g >= lo, self.g <= hi, self.qg >= qlo, self.qg <= qhi]
        quad = np.array([[g.cost_quad_usd_per_mw2h] for g in gens])
        lin = np.array([g.cost_lin_usd_per_mwh for g in gens])
        self.cost_terms.append(
            cp.sum(cp.multiply(quad, cp.square(self.g))) + cp.sum(cp.multiply(lin, self.g))
        )
        return p_inj + sel @ self.g, q_inj + sel @ self.qg

    def _add_batteries(self, ders: list[NodeDers], horizon: int, cons: list[cp.Constraint]) -> Any:
        """Batteries (eq. 7); returns their net injection per node."""
        ns = len(ders)
        bat_nodes = [i for i, d in enumerate(ders) if d.battery is not None]
        self.bat_nodes = [self.nodes[i] for i in bat_nodes]
        if not bat_nodes:
            return None
        bats = [dev for i in bat_nodes if (dev := ders[i].battery) is not None]
        nb = len(bats)
        self.charge = cp.Variable((nb, horizon), nonneg=True, name="charge")
        self.discharge = cp.Variable((nb, horizon), nonneg=True, name="discharge")

        def col(vals: list[float]) -> np.ndarray:
            return np.array(vals, dtype=float)[:, None]

        e0 = col([b.energy_kwh_initial for b in bats]) / KW_PER_PU
        eta_in = col([b.eta_in for b in bats])
        eta_out = col([b.eta_out for b in bats])
        # recursion as sparse constraints: a cumulative-sum matrix would be dense (T² per unit)
        self.energy = cp.Variable((nb, horizon), name="energy")
        delta = cp.multiply(eta_in, self.charge) - cp.multiply(1 / eta_out, self.discharge)
        cons += [
            self.energy[:, :1] == e0 + delta[:, :1],
            self.energy[:, 1:] == self.energy[:, :-1] + delta[:, 1:],
        ]
        band = col([b.end_band for b in bats]) * e0
        cons += [
            self.charge <= col([b.charge_kw_max for b in bats]) / KW_PER_PU,
            self.discharge <= col([b.discharge_kw_max for b in bats]) / KW_PER_PU,
            self.energy >= col([b.energy_kwh_min for b in bats]) / KW_PER_PU,
            self.energy <= col([b.energy_kwh_max for b in bats]) / KW_PER_PU,
            cp.abs(self.energy[:, -1:] - e0) <= band,
        ]
        sel = _selector(bat_nodes, list(range(nb)), ns, nb)
        return sel @ (self.discharge - self.charge)

    def _add_shapable(self, ders: list[NodeDers], horizon: int, cons: list[cp.Constraint]) -> Any:
        """Shapable loads (eq. 8); returns their consumption per node."""
        ns = len(ders)
        shp_nodes = [i for i, d in enumerate(ders) if d.shapable is not None]
        self.shp_nodes = [self.nodes[i] for i in shp_nodes]
        if not shp_nodes:
            return None
        shps = [dev for i in shp_nodes if (dev := ders[i].shapable) is not None]
        hours = np.arange(horizon)
        window = np.array([(hours >= s.start_hour) & (hours < s.end_hour) for s in shps])
        self.shapable = cp.Variable((len(shps), horizon), nonneg=True, name="shapable")
        p_max = np.array([[s.power_kw_max] for s in shps]) / KW_PER_PU * window
        p_min = np.array([[s.power_kw_min] for s in shps]) / KW_PER_PU * window
        energy = np.array([s.energy_kwh for s in shps]) / KW_PER_PU
        cons += [
            self.shapable <= p_max,
            self.shapable >= p_min,
            cp.sum(self.shapable, axis=1) == energy,
        ]
        sel = _selector(shp_nodes, list(range(len(shps))), ns, len(shps))
        return sel @ self.shapable

    def _add_deferrable(self, ders: list[NodeDers], horizon: int, cons: list[cp.Constraint]) -> Any:
        """Deferrable loads (eq. 9, LP relaxation); returns their consumption per node."""
        ns = len(ders)
        dfr_nodes = [i for i, d in enumerate(ders) if d.deferrable is not None]
        self.dfr_nodes = [self.nodes[i] for i in dfr_nodes]
        if not dfr_nodes:
            return None
        dfrs = [dev for i in dfr_nodes if (dev := ders[i].deferrable) is not None]
        nd = len(dfrs)
        self.departure = cp.Variable((nd, horizon), name="departure")
        bounds = [deferrable_bounds(d, horizon) for d in dfrs]
        phi = sp.block_diag([sp.csr_matrix(deferrable_matrix(d, horizon)) for d in dfrs])
        cons += [
            self.departure >= np.array([b[0] for b in bounds]),
            self.departure <= np.array([b[1] for b in bounds]),
            self.departure[:, 1:] >= self.departure[:, :-1],
        ]
        flat = cp.reshape(self.departure, (nd * horizon,), order="C")
        self.deferrable = cp.reshape(phi @ flat, (nd, horizon), order="C") / KW_PER_PU
        sel = _selector(dfr_nodes, list(range(nd)), ns, nd)
        return sel @ self.deferrable

    def _add_network(
        self,
        r: np.ndarray,
        x: np.ndarray,
        own_sel: sp.csr_matrix,
        ch_sel: sp.csr_matrix,
        pos: dict[int, int],
        p_inj: Any,
        q_inj: Any,
        cons: list[cp.Constraint],
    ) -> None:
        """Branch flow (eqs. 1–3, 12b–e): nodal balances, voltage band and drop, the cone."""
        feeder = self.feeder
        self.balance_p = own_sel @ (self.P + cp.multiply(r, self.ell)) - ch_sel @ self.P_ch == p_inj
        balance_q = own_sel @ (self.Q + cp.multiply(x, self.ell)) - ch_sel @ self.Q_ch == q_inj
        cons += [self.balance_p, balance_q]
        vmin2, vmax2 = feeder.vmin_pu**2, feeder.vmax_pu**2
        self.v_lower, self.v_upper = self.v >= vmin2, self.v <= vmax2
        cons += [self.v_lower, self.v_upper, self.v_par >= vmin2, self.v_par <= vmax2]
        if 0 in pos and feeder.root_vm_pu is not None:
            cons.append(self.v[pos[0]] == feeder.root_vm_pu**2)
        if not self.own_lines:
            return
        z2 = r**2 + x**2
        drop = 2 * (cp.multiply(r, self.P) + cp.multiply(x, self.Q)) + cp.multiply(z2, self.ell)
        cons.append(own_sel.T @ self.v == self.v_par + drop)
        cons.append(
            cp.SOC(
                cp.vec(self.ell + self.v_par, order="F"),
                cp.vstack(
                    [
                        cp.vec(2 * self.P, order="F"),
                        cp.vec(2 * self.Q, order="F"),
                        cp.vec(self.ell - self.v_par, order="F"),
                    ]
                ),
                axis=0,
            )
        )

    def _merge_internal(self, pos: dict[int, int], cons: list[cp.Constraint]) -> None:
        """One agent for a connected group of nodes (seed 001 §VII: "devices, feeders, or
        substations as nodes"): its copies of lines inside the group agree by construction, so
        only the lines leaving the group are negotiated through the aggregator."""
        own_lines, parent = self.own_lines, self.feeder.parent
        own_pos = {k: i for i, k in enumerate(own_lines)}
        inside = [(c, own_pos[k]) for c, k in enumerate(self.child_lines) if k in own_pos]
        if inside:
            ch_idx, own_idx = (list(t) for t in zip(*inside, strict=True))
            cons += [self.P_ch[ch_idx] == self.P[own_idx], self.Q_ch[ch_idx] == self.Q[own_idx]]
        par_inside = [i for i, k in enumerate(own_lines) if int(parent[k]) in pos]
        if par_inside:
            rows = [pos[int(parent[own_lines[i]])] for i in par_inside]
            cons.append(self.v_par[par_inside] == self.v[rows])

    def _coupling_layout(self, zl: ZLayout) -> CouplingLayout:
        """Where each copy of x̃ (P, Q, v, v_par, P_ch, Q_ch) sits in z, and who holds it."""
        parent = self.feeder.parent
        own = np.array(self.own_lines, dtype=int)
        child = np.array(self.child_lines, dtype=int)
        z_rows = np.concatenate(
            [
                zl.p_row(own),
                zl.q_row(own),
                zl.v_row(np.array(self.nodes, dtype=int)),
                zl.v_row(parent[self.own_lines].astype(int)),
                zl.p_row(child),
                zl.q_row(child),
            ]
        ).astype(int)
        owner = np.concatenate(
            [self.own_lines, self.own_lines, self.nodes, self.own_lines]
            + [parent[self.child_lines].astype(int)] * 2
        ).astype(int)
        return CouplingLayout(z_rows=z_rows, owner=owner)

    def solve_admm(
        self, z_tilde: np.ndarray, xi: np.ndarray, rho: float | np.ndarray
    ) -> np.ndarray:
        """Eq. 15: minimize cost + ξᵀ(x̃ − z̃) + ½‖x̃ − z̃‖²_ρ; return the new x̃ (K × T).

        ``rho`` is a scalar or one penalty per copy and hour (K × T); voltage copies are
        multiplied by the model's ``v_weight``."""
        assert self.problem is not None
        rho_copy = np.broadcast_to(np.asarray(rho, dtype=float), z_tilde.shape) * self.weight
        self.lin.value = xi - rho_copy * z_tilde
        self.sqrt_rho.value = np.sqrt(rho_copy)
        self.problem.solve(solver=cp.CLARABEL)
        if self.problem.status not in ("optimal", "optimal_inaccurate"):
            raise ScheduleError(f"local problem of nodes {self.nodes}: {self.problem.status}")
        return np.asarray(self.x_tilde.value)

    def dlmp_usd_per_mwh(self) -> np.ndarray:
        """Duals of the nodal real-power balances (|S| × T), sign: cost of one more MWh of load."""
        return np.asarray(self.balance_p.dual_value)

    def injections_mw(self) -> np.ndarray:
        return np.asarray(self.p_inj.value)

    def generation_mw(self) -> np.ndarray:
        """Generator outputs (|S| × T), zero at nodes without one."""
        out = np.zeros((len(self.nodes), self.feeder.horizon_h))
        if self.g is not None:
            pos = {node: i for i, node in enumerate(self.nodes)}
            out[[pos[i] for i in self.gen_nodes]] = self.g.value
        return out

    def cost_usd(self) -> float:
        return float(self.cost.value)


@dataclass
class CentralResult:
    objective_usd: float
    seconds: float
    p_mw: np.ndarray  # net injection per node (N × T)
    q_mvar: np.ndarray
    P_mw: np.ndarray  # line flows (N × T), row 0 unused
    Q_mvar: np.ndarray
    v_pu2: np.ndarray  # squared voltage magnitude (N × T)
    ell_pu: np.ndarray  # squared current (N × T), row 0 unused
    dlmp_usd_per_mwh: np.ndarray  # N × T
    voltage_dual: np.ndarray  # upper minus lower voltage-limit duals (N × T), $/pu² h
    relaxation_gap: float
    z: np.ndarray  # the global coupling variable (3n + 1) × T
    model: LocalModel


def relaxation_gap(
    P: np.ndarray, Q: np.ndarray, ell: np.ndarray, v_parent: np.ndarray, floor: float = 1e-3
) -> float:
    """max over lines/hours of |ℓ·v_π − P² − Q²| / max(ℓ·v_π, floor · max ℓ·v_π).

    0 means the cone is tight everywhere.  The floor keeps lines that carry almost nothing (a
    few kVA, where the solver's absolute tolerance dominates) from reading as inexact."""
    lv = ell * v_parent
    scale = max(float(lv.max()), 1e-12)
    return float(np.max(np.abs(lv - P**2 - Q**2) / np.maximum(lv, floor * scale)))


def solve_central(feeder: Feeder) -> CentralResult:
    """The whole day in one SOCP (Clarabel): the reference for ADMM and the source of DLMPs."""
    started = time.perf_counter()
    model = LocalModel(feeder, admm=False)
    n, horizon = feeder.n_nodes, feeder.horizon_h
    z = cp.Variable((global_rows(n), horizon), name="z")
    consensus = model.x_tilde == z[model.layout.z_rows]
    problem = cp.Problem(cp.Minimize(model.cost), [*model.constraints, consensus])
    problem.solve(solver=cp.CLARABEL)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise ScheduleError(f"centralized DistFlow OPF of {feeder.name}: {problem.status}")
    seconds = time.perf_counter() - started
    P = np.zeros((n, horizon))
    Q = np.zeros((n, horizon))
    ell = np.zeros((n, horizon))
    P[1:], Q[1:], ell[1:] = model.P.value, model.Q.value, model.ell.value
    v = np.asarray(model.v.value)
    v_par = np.asarray(model.v_par.value)
    upper = np.asarray(model.v_upper.dual_value)
    lower = np.asarray(model.v_lower.dual_value)
    return CentralResult(
        objective_usd=float(problem.value),
        seconds=seconds,
        p_mw=model.injections_mw(),
        q_mvar=np.asarray(
            model.q_inj.value if isinstance(model.q_inj, cp.Expression) else model.q_inj
        ),
        P_mw=P,
        Q_mvar=Q,
        v_pu2=v,
        ell_pu=ell,
        dlmp_usd_per_mwh=model.dlmp_usd_per_mwh(),
        voltage_dual=upper - lower,
        relaxation_gap=relaxation_gap(P[1:], Q[1:], ell[1:], v_par),
        z=np.asarray(z.value),
        model=model,
    )
