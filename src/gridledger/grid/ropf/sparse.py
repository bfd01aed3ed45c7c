"""Exact R-OPF on sparse matrices: the same full-space problem as :mod:`.exact`, solved by IPOPT
(through CasADi) with exact sparse first and second derivatives.

Why IPOPT: the dense SLSQP of :mod:`.exact` builds (2·nb)×n Jacobians and solves a dense QP per
iteration, O(nb³): minutes on case300. The power-balance Jacobian and the Hessian of the
Lagrangian have a few nonzeros per admittance entry, so a sparse interior point (IPOPT with
MUMPS, shipped in CasADi's PyPI wheel; cyipopt has no Linux wheel) needs tens of sparse
factorizations instead.

Why the derivatives are written here rather than left to CasADi's automatic differentiation:
measured on SimBench 1-MVLV-rural-all-0-sw (5,483 buses), building CasADi's symbolic Hessian of
the Lagrangian took 6.8 s of CPU before the first iteration (MX graphs build fast but evaluate
4× slower per iteration). Every constraint here is a sum of *pair terms*
``T = v_i·v_j·Re(α·e^{j(θ_i − θ_j)})`` — one per admittance nonzero for the power balance, four
per branch end for |I|² — so values, Jacobian and Hessian come from one vectorized formula
(:class:`_PairTerms`) on a sparsity pattern fixed at setup, and IPOPT gets them through CasADi
callbacks. ``tests/grid/test_ropf_sparse.py`` checks them against CasADi's own automatic
differentiation of the same constraints written symbolically.

The problem is variable for variable :class:`.exact._FullSpace`'s: voltage angles (all buses but
the reference), free magnitudes, free generator Q, SVC Q and the scalar ``slack`` (the objective);
P and Q balance at every bus as equalities; branch currents at both ends and generator capability
circles as inequalities; the same bounds and the same start.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np

from ..powerflow import PowerFlowResult
from .exact import RopfResult, _FullSpace
from .problem import FEASIBILITY_TOL_PU, RopfProblem

# IPOPT's tolerance on the scaled KKT error. 1e-10 puts the losses within 1e-8 relative of the
# SLSQP optimum on the 9-bus cases and case118 (tests ask for 1e-6).
IPOPT_TOL = 1e-10
# The start is a converged power flow (balance satisfied), so the barrier can start small:
# measured mu_init 1e-4 against IPOPT's 0.1: case300 132 → 92 iterations (0.9 → 0.46 s CPU),
# the 5,483-bus SimBench grid 31 → 27. ("mu_strategy adaptive" cut SimBench to 19 but took
# case300 to 220.) With the branch limits screened (WATCH_LOADING), 1e-5 against 1e-4: SimBench
# 27 → 23 iterations, ieee9 10 → 8, case39 18 → 16, case118 23 → 24, case300 (infeasible as
# shipped) 82 → 91; 1e-6 was no better.
IPOPT_OPTIONS: dict[str, float] = {"mu_init": 1e-5}


def _one_blas_thread() -> None:
    """Run the OpenBLAS bundled with CasADi (MUMPS's dense kernels) on one thread.

    Its worker threads do not pay on these KKT systems (a grid's graph is nearly a tree, so the
    frontal matrices are small) and compete for the DSO's shared cores: on SimBench
    1-MVLV-rural-all-0-sw, 3 runs each, CPU 0.83–0.92 s with one thread against 0.89–1.11 s with
    its default. ``solve_ropf``'s threadpool limit does not reach it (threadpoolctl does not know
    the library's name).
    """
    library = Path(ca.__file__).parent / "libcasadi-tp-openblas.so.0"
    with contextlib.suppress(OSError, AttributeError):  # another CasADi build: leave it alone
        ctypes.CDLL(str(library)).openblas_set_num_threads(1)


_one_blas_thread()

# Branch limits IPOPT sees at first: those loaded at least this much at the start. Real feeders
# run far below their ratings (SimBench 1-MVLV-rural-all-0-sw: 107 of 5,483 rated branches above
# 50 %, none above 67 %; case300 none above 13 %), and each limit is two rows of the KKT system
# and four pair terms per end, more than the power balance itself. A limit left out that the
# answer breaks is added and the problem solved again from there (:func:`solve_sparse`), so the
# answer is a KKT point of the full problem: the omitted limits hold with zero multipliers.
WATCH_LOADING = 0.5


class _SparseSpace(_FullSpace):
    """The full-space layout, bounds and start of :class:`._FullSpace` without its dense
    matrices (a 5,000-bus Ybus as a dense array is 400 MB)."""

    def __init__(self, prob: RopfProblem, rated: np.ndarray | None = None) -> None:
        # no super(): it would densify Ybus. ``rated``: the branches whose limits are
        # constraints (default: every rated one).
        self._set_up(prob)
        self.rated = limited_branches(prob) if rated is None else rated
        self._bounds: list[tuple[float | None, float | None]] | None = None

    def bounds(self) -> list[tuple[float | None, float | None]]:
        """The parent's bounds, built once (a Python list over 11,000 variables on SimBench,
        asked for three times per solve)."""
        if self._bounds is None:
            self._bounds = super().bounds()
        return self._bounds


def limited_branches(prob: RopfProblem) -> np.ndarray:
    """Positions of the branches whose current limit the R-OPF enforces."""
    c = prob.compiled
    return np.flatnonzero(c.rate_pu > 0) if prob.options.line_limits else np.array([], int)


class _Pattern:
    """Accumulates (row, col) entries into a sparse matrix whose structure is fixed at setup."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> None:
        lin = cols.astype(np.int64) * shape[0] + rows  # column-major: CSC order
        uniq, self.slot = np.unique(lin, return_inverse=True)
        self.nnz = uniq.size
        r, c = uniq % shape[0], uniq // shape[0]
        indptr = np.searchsorted(c, np.arange(shape[1] + 1))
        self.sparsity = ca.Sparsity(shape[0], shape[1], indptr.tolist(), r.tolist())
        self.rows, self.cols = r, c

    def values(self, v: np.ndarray) -> np.ndarray:
        return np.bincount(self.slot, weights=v, minlength=self.nnz)


@dataclass(frozen=True)
class _PairTerms:
    """Constraint rows that are sums of T_e = v_i·v_j·Re(α_e·e^{j(θ_i − θ_j)}) over pairs e."""

    row: np.ndarray  # constraint row of each pair
    i: np.ndarray  # bus positions
    j: np.ndarray
    alpha: np.ndarray  # complex coefficient

    def evaluate(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, D) at bus voltages ``v``: each pair's value and its derivative by θ_i (= minus
        its derivative by θ_j)."""
        z = self.alpha * v[self.i] * np.conj(v[self.j])
        return z.real, -z.imag


class _Derivatives:
    """g(x), its Jacobian and the Hessian of the Lagrangian, on fixed sparsity patterns."""

    def __init__(self, fs: _SparseSpace) -> None:
        c, lay = fs.c, fs.layout
        nb = c.n_bus
        a, m, q, _ = lay.sizes
        self.n = n = lay.n
        self.fs = fs
        # Variable column of each bus's angle and magnitude (-1: fixed).
        self.col_va = np.full(nb, -1)
        self.col_va[lay.nonref] = np.arange(a)
        self.col_vm = np.full(nb, -1)
        self.col_vm[lay.vm_free] = a + np.arange(m)
        self.vm_fixed = fs.vm_fixed
        # Power balance: P rows 0..nb-1, Q rows nb..2nb-1, one pair per Ybus nonzero.
        y = c.ybus.tocoo()
        conj_y = np.conj(y.data)
        rows = [y.row, nb + y.row]
        ii, jj, alpha = [y.row, y.row], [y.col, y.col], [conj_y, -1j * conj_y]
        # |I|² at both ends of each rated branch: pairs (f,f), (f,t), (t,f), (t,t).
        self.n_balance = 2 * nb
        row0 = 2 * nb
        nr = fs.rated.size
        if nr:
            f, t = c.branch_from[fs.rated], c.branch_to[fs.rated]
            for ymat in (c.yf, c.yt):
                yk = ymat[fs.rated].tocsr()
                yf_ = np.asarray(yk[np.arange(nr), f]).ravel()
                yt_ = np.asarray(yk[np.arange(nr), t]).ravel()
                r = row0 + np.arange(nr)
                for bi, bj, al in (
                    (f, f, yf_ * np.conj(yf_)),
                    (f, t, yf_ * np.conj(yt_)),
                    (t, f, yt_ * np.conj(yf_)),
                    (t, t, yt_ * np.conj(yt_)),
                ):
                    rows.append(r)
                    ii.append(bi)
                    jj.append(bj)
                    alpha.append(al)
                row0 += nr
        self.pairs = _PairTerms(
            np.concatenate(rows), np.concatenate(ii), np.concatenate(jj), np.concatenate(alpha)
        )
        # Capability circles p² + q², p = gen_p + w·slack, q = the generator's variable or fixed.
        g = fs.cap_gens
        self.cap_row = row0 + np.arange(g.size)
        self.n_g = row0 + g.size
        free = np.isin(g, lay.q_free)
        self.cap_qcol = np.where(free, a + m + np.searchsorted(lay.q_free, g), -1)
        self.cap_p0, self.cap_w = c.gen_p[g], c.slack_weight[g]
        self.cap_qfixed = c.gen_q[g]
        # Linear parts of the balance rows: -w·slack in P, -Q injections in Q.
        slack_col = n - 1
        w_rows = np.flatnonzero(fs.bus_w)
        q_rows = nb + c.gen_bus[lay.q_free]
        s_rows = nb + c.svc_bus
        self.lin_rows = np.concatenate([w_rows, q_rows, s_rows])
        self.lin_cols = np.concatenate(
            [
                np.full(w_rows.size, slack_col),
                a + m + np.arange(q),
                a + m + q + np.arange(s_rows.size),
            ]
        )
        self.lin_vals = np.concatenate([-fs.bus_w[w_rows], -np.ones(q + s_rows.size)])
        self.const = np.concatenate([-fs.p_sched, -fs.q_sched, np.zeros(self.n_g - self.n_balance)])
        # (x, (vm, T, D) at x)
        self._last: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._build_patterns()

    # -- structure -------------------------------------------------------------------------

    def _pair_jac_entries(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.pairs
        rows = np.concatenate([p.row] * 4)
        cols = np.concatenate(
            [self.col_va[p.i], self.col_va[p.j], self.col_vm[p.i], self.col_vm[p.j]]
        )
        return rows, cols

    def _pair_hess_entries(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.pairs
        ai, aj, vi, vj = self.col_va[p.i], self.col_va[p.j], self.col_vm[p.i], self.col_vm[p.j]
        # The order here is the order of the values in hessian().
        r = np.concatenate([ai, aj, ai, ai, ai, aj, aj, vi])
        c = np.concatenate([ai, aj, aj, vi, vj, vi, vj, vj])
        return r, c

    def _build_patterns(self) -> None:
        n = self.n
        jr, jc = self._pair_jac_entries()
        cap_q = self.cap_qcol >= 0
        jr = np.concatenate([jr, self.lin_rows, self.cap_row, self.cap_row[cap_q]])
        jc = np.concatenate(
            [jc, self.lin_cols, np.full(self.cap_row.size, n - 1), self.cap_qcol[cap_q]]
        )
        self.jac_keep = jc >= 0
        self.jac = _Pattern(jr[self.jac_keep], jc[self.jac_keep], (self.n_g, n))
        hr, hc = self._pair_hess_entries()
        hr = np.concatenate([hr, self.cap_qcol[cap_q], [n - 1]])
        hc = np.concatenate([hc, self.cap_qcol[cap_q], [n - 1]])
        # Upper triangle (IPOPT via CasADi takes triu); a term below the diagonal is mirrored.
        lo, hi = np.minimum(hr, hc), np.maximum(hr, hc)
        self.hess_keep = lo >= 0
        self.hess = _Pattern(lo[self.hess_keep], hi[self.hess_keep], (n, n))
        self.cap_qmask = cap_q

    # -- values ----------------------------------------------------------------------------

    def _terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vm, T, D) at x; IPOPT asks for g and its Jacobian at the same point, so the last
        point's terms are kept."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1]
        va = np.where(self.col_va >= 0, x[self.col_va], 0.0)
        vm = np.where(self.col_vm >= 0, x[self.col_vm], self.vm_fixed)
        t, d = self.pairs.evaluate(vm * np.exp(1j * va))
        self._last = (x.copy(), (vm, t, d))
        return vm, t, d

    def _cap_pq(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.cap_p0 + self.cap_w * x[-1]
        q = np.where(self.cap_qcol >= 0, x[self.cap_qcol], self.cap_qfixed)
        return p, q

    def constraints(self, x: np.ndarray) -> np.ndarray:
        _, t, _ = self._terms(x)
        g: np.ndarray = np.bincount(self.pairs.row, weights=t, minlength=self.n_g) + self.const
        g += np.bincount(
            self.lin_rows, weights=self.lin_vals * x[self.lin_cols], minlength=self.n_g
        )
        p, q = self._cap_pq(x)
        g[self.cap_row] += p * p + q * q
        return g

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        vm, t, d = self._terms(x)
        vi, vj = vm[self.pairs.i], vm[self.pairs.j]
        p, q = self._cap_pq(x)
        vals = np.concatenate(
            [d, -d, t / vi, t / vj, self.lin_vals, 2 * p * self.cap_w, 2 * q[self.cap_qmask]]
        )
        return self.jac.values(vals[self.jac_keep])

    def hessian(self, x: np.ndarray, lam_g: np.ndarray) -> np.ndarray:
        vm, t, d = self._terms(x)
        lam = lam_g[self.pairs.row]
        a, dd = lam * t, lam * d
        vi, vj = vm[self.pairs.i], vm[self.pairs.j]
        # ∂²T: θiθi −T, θjθj −T, θiθj +T, θi·vi D/vi, θi·vj D/vj, θj·vi −D/vi, θj·vj −D/vj,
        # vi·vj T/(vi·vj). Off-diagonal ones stand for both (a, b) and (b, a); an i = j pair's
        # θ terms cancel and its vi·vj term lands on the diagonal once, hence the 2 there.
        same = self.pairs.i == self.pairs.j
        vv = np.where(same, 2.0, 1.0) * a / (vi * vj)
        vals = np.concatenate(
            [-a, -a, np.where(same, 2 * a, a), dd / vi, dd / vj, -dd / vi, -dd / vj, vv]
        )
        lam_cap = lam_g[self.cap_row]
        vals = np.concatenate(
            [vals, 2 * lam_cap[self.cap_qmask], [2 * np.sum(lam_cap * self.cap_w**2)]]
        )
        return self.hess.values(vals[self.hess_keep])


class _Callback(ca.Callback):
    """A CasADi function evaluated by numpy: ``outputs(*inputs)`` returns one array per output
    (the nonzeros, in CSC order, for a sparse output)."""

    def __init__(
        self,
        name: str,
        inputs: list[ca.Sparsity],
        outputs: list[ca.Sparsity],
        fn: Callable[..., list[np.ndarray]],
        jacobian: tuple[ca.Sparsity, Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> None:
        ca.Callback.__init__(self)
        self._in, self._out, self._fn = inputs, outputs, fn
        # (sparsity, fn) of d(output 0)/d(input 0): CasADi asks for it to recover multipliers.
        self._jacobian = jacobian
        self.construct(name, {"enable_fd": False})

    def has_jacobian(self) -> bool:
        return self._jacobian is not None

    def get_jacobian(
        self, name: str, inames: Sequence[str], onames: Sequence[str], opts: Mapping[str, Any]
    ) -> ca.Function:
        assert self._jacobian is not None  # CasADi asks only when has_jacobian() said yes
        sparsity, fn = self._jacobian
        n_out = sparsity.shape[0]
        outputs = [sparsity, ca.Sparsity(n_out, self._in[1].numel())]
        self._jac_callback = _Callback(
            name, [*self._in, *self._out], outputs, lambda x, *_: [fn(x), np.zeros(0)]
        )
        return self._jac_callback

    def get_n_in(self) -> int:
        return len(self._in)

    def get_n_out(self) -> int:
        return len(self._out)

    def get_sparsity_in(self, k: int) -> ca.Sparsity:
        return self._in[k]

    def get_sparsity_out(self, k: int) -> ca.Sparsity:
        return self._out[k]

    # Buffers, not DMs: building a DM from a numpy array copies element by element (40 ms for a
    # 100k-nonzero Hessian); CasADi hands out its own input and output memory here instead.
    def has_eval_buffer(self) -> bool:
        return True

    def eval_buffer(
        self, args: Sequence[memoryview | None], results: Sequence[memoryview | None]
    ) -> int:
        # An empty input (the parameter vector p) arrives as None.
        arrays = [np.zeros(0) if a is None else np.frombuffer(a, dtype=float) for a in args]
        for out, value in zip(results, self._fn(*arrays), strict=True):
            if out is not None:
                np.frombuffer(out, dtype=float)[:] = value
        return 0


@dataclass
class _Ipopt:
    """An IPOPT solver on the problem and the bounds of its constraints. ``callbacks`` holds the
    Python functions IPOPT calls into: they must live as long as the solver."""

    solver: ca.Function
    lbg: np.ndarray
    ubg: np.ndarray
    callbacks: list[_Callback]


def _ipopt(fs: _SparseSpace, tol: float, max_iter: int) -> _Ipopt:
    """IPOPT on the problem, its derivatives from :class:`_Derivatives`."""
    der = _Derivatives(fs)
    n, n_g = der.n, der.n_g
    dense = ca.Sparsity.dense
    scalar, empty = dense(1, 1), ca.Sparsity(0, 0)
    grad_f = np.zeros(n)
    grad_f[-1] = 1.0
    g_fn = _Callback(
        "ropf_g",
        [dense(n, 1), empty],
        [dense(n_g, 1)],
        lambda x, _p: [der.constraints(x)],
        jacobian=(der.jac.sparsity, der.jacobian),
    )
    jac_fn = _Callback(
        "ropf_jac_g",
        [dense(n, 1), empty],
        [dense(n_g, 1), der.jac.sparsity],
        lambda x, _p: [der.constraints(x), der.jacobian(x)],
    )
    grad_fn = _Callback(
        "ropf_grad_f", [dense(n, 1), empty], [scalar, dense(n, 1)], lambda x, _p: [x[-1:], grad_f]
    )
    hess_fn = _Callback(
        "ropf_hess_l",
        [dense(n, 1), empty, scalar, dense(n_g, 1)],
        [der.hess.sparsity],
        lambda x, _p, _lf, lam_g: [der.hessian(x, lam_g)],
    )
    x = ca.MX.sym("x", n)
    p = ca.MX.sym("p", 0, 0)
    nlp = {"x": x, "p": p, "f": x[n - 1], "g": g_fn(x, p)}
    solver = ca.nlpsol(
        "ropf",
        "ipopt",
        nlp,
        {
            "print_time": False,
            "grad_f": grad_fn,
            "jac_g": jac_fn,
            "hess_lag": hess_fn,
            "ipopt": {
                "print_level": 0,
                "sb": "yes",
                "tol": tol,
                "max_iter": max_iter,
                "linear_solver": "mumps",
                **IPOPT_OPTIONS,
            },
        },
    )
    lbg = np.zeros(n_g)
    ubg = np.zeros(n_g)
    lbg[der.n_balance :] = -np.inf
    c = fs.c
    ubg[der.n_balance : der.cap_row[0] if der.cap_row.size else n_g] = np.tile(
        c.rate_pu[fs.rated] ** 2, 2
    )
    ubg[der.cap_row] = c.gen_sn[fs.cap_gens] ** 2
    return _Ipopt(solver, lbg, ubg, [g_fn, jac_fn, grad_fn, hess_fn])


def solve_sparse(prob: RopfProblem, *, max_iter: int = 500, tol: float = IPOPT_TOL) -> RopfResult:
    """Solve the R-OPF to a KKT point with IPOPT (sparse, exact Hessian); verify it with one
    power flow, and keep the start if the end is worse (as :func:`.exact.solve_exact`).

    Branch limits enter as :data:`WATCH_LOADING` says; whenever the answer breaks a limit that
    was left out, the limits loaded at least that much there join and IPOPT runs again from it.
    """
    t0 = time.perf_counter()
    before = prob.solve_pf(prob.current_x())
    limited = limited_branches(prob)
    watched = limited[_loading(before, limited) >= WATCH_LOADING] if before.converged else limited
    start, iterations = before, 0
    while True:
        fs = _SparseSpace(prob, watched)
        nlp = _ipopt(fs, tol, max_iter)
        bounds = fs.bounds()
        lbx = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
        ubx = np.array([np.inf if b[1] is None else b[1] for b in bounds])
        sol = nlp.solver(x0=fs.start(start), lbx=lbx, ubx=ubx, lbg=nlp.lbg, ubg=nlp.ubg)
        iterations += int(nlp.solver.stats().get("iter_count", 0))
        x = fs.to_problem_x(np.asarray(sol["x"]).ravel())
        after = prob.solve_pf(x)
        if not after.converged or watched.size == limited.size:
            break
        loading = _loading(after, limited)
        broken = loading > 1.0 + FEASIBILITY_TOL_PU
        if not np.any(broken & ~np.isin(limited, watched)):
            break
        # Each round adds at least one limit, so the loop ends (at worst with all of them).
        watched = np.union1d(watched, limited[broken | (loading >= WATCH_LOADING)])
        start = after
    if prob.breach(before) < prob.breach(after) or (
        prob.breach(before) == prob.breach(after) and before.loss_mw < after.loss_mw
    ):
        x, after = prob.current_x(), before
    violations = prob.violations(after)
    base = prob.compiled.base_mva
    return RopfResult(
        method="exact",
        control=prob.control,
        x=x,
        variable_names=prob.variable_names(),
        loss_before_pu=before.loss_mw / base,
        loss_after_pu=after.loss_mw / base,
        feasible=after.converged and not violations,
        violations=violations,
        evaluations=iterations + 2,
        iterations=iterations,
        seconds=time.perf_counter() - t0,
        pf_after=after,
        pf_before=before,
    )


def _loading(pf: PowerFlowResult, branches: np.ndarray) -> np.ndarray:
    """Current loading (fraction of rating) of ``branches`` in a solved power flow."""
    loading: np.ndarray = pf.loading_pct[branches] / 100.0
    return loading
