"""Eq. 15 solved by Clarabel directly on conic data that cvxpy compiles once.

Between ADMM iterations only the augmented-Lagrangian terms change, and they are linear and
diagonal-quadratic in the copies ``x̃``: ``(ξ − ρ z̃)ᵀ x̃ + ½ x̃ᵀ diag(ρ) x̃``.  So the subproblem
is cvxpy's conic form of the *fixed* model (``min cost s.t. constraints``, no parameters) plus
``diag(ρ)`` on the copies' columns of ``P`` and ``ξ − ρ z̃`` on those entries of ``q``.

Why not the DPP problem of :class:`~gridledger.grid.distflow.LocalModel`: measured on SCE-56 with
8 clusters, DPP compilation took ≈ 1.3–2.5 s per cluster, re-canonicalizing the parameters
≈ 6 ms per solve, and the ``sum_squares`` term added one auxiliary variable and one equality per
copy entry (3200 columns instead of 2096 for an 8-node cluster), so the interior-point solve was
slower too.  Here the compile is ≈ 0.1–0.4 s, and while ρ is fixed the same Clarabel solver
object gets only the new ``q`` in place (no new equilibration or symbolic factorization).

Solutions are unpacked through cvxpy's own inverse chain, so the model's variables, the cost and
the nodal balance duals (DLMPs) read exactly as after ``problem.solve``.
"""

from __future__ import annotations

import clarabel
import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import dims_to_solver_cones

from gridledger.grid.distflow import LocalModel, ScheduleError
from gridledger.grid.feeders import Feeder


def _settings(tolerance: float, refine: bool) -> clarabel.DefaultSettings:
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    # in-place data updates need presolve off (no row has infinite bounds here, so it removed
    # nothing); one thread: each agent runs in its own process on a 2-core machine
    settings.presolve_enable = False
    settings.chordal_decomposition_enable = False
    settings.max_threads = 1
    # iterative refinement of each KKT solve was a third of the CPU time; without it Clarabel
    # takes the same number of interior-point steps and the ADMM iterates on SCE-56 agree to the
    # printed digits (residual 0.058828 and gap −0.0404 % at iteration 100 either way)
    settings.iterative_refinement_enable = refine
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tolerance
    return settings


class ConicLocalModel:
    """Same interface as :class:`LocalModel` for ADMM (``solve_admm``, ``cost_usd``,
    ``injections_mw``, ``generation_mw``, ``dlmp_usd_per_mwh``, ``layout``, ``weight``,
    ``nodes``)."""

    def __init__(
        self,
        feeder: Feeder,
        nodes: list[int] | None = None,
        v_weight: float = 1.0,
        merge_internal: bool = False,
        tolerance: float = 1e-8,
        refine: bool = False,
    ) -> None:
        if not 0 < tolerance < 1e-2:
            raise ValueError(f"solver tolerance {tolerance} not in (0, 1e-2)")
        self.feeder = feeder
        self.model = LocalModel(
            feeder, nodes, admm=False, v_weight=v_weight, merge_internal=merge_internal
        )
        self.layout = self.model.layout
        self.weight = self.model.weight
        self.nodes = self.model.nodes
        self.problem = cp.Problem(cp.Minimize(self.model.cost), self.model.constraints)
        data, self.chain, self.inverse = self.problem.get_problem_data(cp.CLARABEL)
        # the Clarabel step of cvxpy's inverse chain reads the options it was solved with
        self.inverse[-1].solver_options = {}
        offsets = next(d.var_offsets for d in reversed(self.inverse) if hasattr(d, "var_offsets"))
        blocks = [
            offsets[var.id] + np.arange(var.size).reshape(var.shape, order="F")
            for var in (
                self.model.P,
                self.model.Q,
                self.model.v,
                self.model.v_par,
                self.model.P_ch,
                self.model.Q_ch,
            )
            if var.shape[0]
        ]
        # solver column of each copy entry (rows of x̃ × hours), in x̃'s own row order
        self.columns = np.vstack(blocks)
        n = data["c"].size
        self.q0 = np.asarray(data["c"], dtype=float)
        p0 = sp.csc_matrix(data["P"]) if "P" in data else sp.csc_matrix((n, n))
        # a stored diagonal on every column, so ρ changes keep P's sparsity pattern (adding an
        # identity and taking it off again: sparse sums drop explicit zeros)
        self.p0 = sp.triu(p0 + sp.eye(n, format="csc")).tocsc()
        self.p0.sort_indices()
        self._diag_pos = self._diagonal_positions(self.p0)
        self.p0.data[self._diag_pos] -= 1.0
        self.p0_diag = self.p0.data[self._diag_pos].copy()
        self.A = sp.csc_matrix(data["A"])
        self.b = np.asarray(data["b"], dtype=float)
        self.cones = dims_to_solver_cones(data["dims"])
        self.tolerance, self.refine = tolerance, refine
        self.solver: clarabel.DefaultSolver | None = None
        self._rho_copy: np.ndarray | None = None

    @staticmethod
    def _diagonal_positions(p: sp.csc_matrix) -> np.ndarray:
        """Index in ``p.data`` of each diagonal entry (explicit zeros included)."""
        n = p.shape[0]
        pos = np.empty(n, dtype=int)
        for j in range(n):
            lo, hi = p.indptr[j], p.indptr[j + 1]
            k = lo + int(np.searchsorted(p.indices[lo:hi], j))
            if k >= hi or p.indices[k] != j:
                raise AssertionError("P lost a diagonal entry")
            pos[j] = k
        return pos

    def _p_values(self, rho_copy: np.ndarray) -> sp.csc_matrix:
        diag = self.p0_diag.copy()
        diag[self.columns.ravel()] += rho_copy.ravel()
        p = self.p0.copy()
        p.data[self._diag_pos] = diag
        return p

    def solve_admm(
        self, z_tilde: np.ndarray, xi: np.ndarray, rho: float | np.ndarray
    ) -> np.ndarray:
        """Eq. 15 (as :meth:`LocalModel.solve_admm`): return the new x̃ (K × T)."""
        shape = self.columns.shape
        if z_tilde.shape != shape or xi.shape != shape:
            raise ValueError(
                f"z̃ {z_tilde.shape} and ξ {xi.shape} must both be {shape} (copies × hours)"
            )
        rho_copy = np.broadcast_to(np.asarray(rho, dtype=float), shape) * self.weight
        if not np.all(rho_copy > 0):
            raise ValueError("ρ must be positive")
        q = self.q0.copy()
        q[self.columns.ravel()] += (xi - rho_copy * z_tilde).ravel()
        if (
            self.solver is None
            or self._rho_copy is None
            or not np.array_equal(rho_copy, self._rho_copy)
        ):
            # built on the model's own q and only ever solved after an update: Clarabel scales
            # the cost by the q it was built with, so building on this iteration's q would make
            # later solves depend on which iteration came first (and differ between an agent
            # that warmed up and the off-chain runner); a new solver when ρ (so P) changes
            settings = _settings(self.tolerance, self.refine)
            p = self._p_values(rho_copy)
            self.solver = clarabel.DefaultSolver(p, self.q0, self.A, self.b, self.cones, settings)
        self.solver.update(q=q)
        self._rho_copy = rho_copy.copy()
        solution = self.solver.solve()
        status = str(solution.status)
        if status not in ("Solved", "AlmostSolved"):
            raise ScheduleError(f"local problem of nodes {self.nodes}: {status}")
        x = np.asarray(solution.x)
        self.problem.unpack_results(solution, self.chain, self.inverse)
        result: np.ndarray = x[self.columns]
        return result

    def dlmp_usd_per_mwh(self) -> np.ndarray:
        return self.model.dlmp_usd_per_mwh()

    def injections_mw(self) -> np.ndarray:
        return self.model.injections_mw()

    def generation_mw(self) -> np.ndarray:
        return self.model.generation_mw()

    def cost_usd(self) -> float:
        return self.model.cost_usd()
