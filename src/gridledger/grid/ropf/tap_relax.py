"""The R-OPF with tap positions as continuous variables: where the tap search starts.

:class:`.exact._FullSpace` (SLSQP, dense) with one more variable per tap changer: its position
``p`` as a real number in ``[tap_min, tap_max]``.  Only changers on the ``from`` side (the
ratio ``τ = τ₀·f(p)/f(p₀)`` is then the only thing that moves, see :mod:`gridledger.grid.taps`)
and only below :data:`.exact.SPARSE_FROM_BUSES` buses (a dense space); otherwise there is no
relaxation and the search starts from the current positions.

The admittance entries of a tapped branch at ratio τ (MATPOWER's pi model, shift φ):
``Y_ff = (y_s + j·b/2)/τ²``, ``Y_ft = −y_s/(τ·e^{−jφ})``, ``Y_tf = −y_s/(τ·e^{jφ})``, plus its
no-load conductance at the from end, ``G₀·(τ₀/τ)²``.  Their derivatives by τ give the
Jacobian columns of the power balance (∂S/∂p = V ⊙ conj(∂Y/∂p · V)) and of the branch
currents.  The relaxed optimum is rounded to the nearest positions by the caller.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from ..network import Network
from ..taps import tap_row, turns_factor
from .exact import SPARSE_FROM_BUSES, _FullSpace
from .problem import RopfProblem


class _TapSpace(_FullSpace):
    """The full space plus tap positions, just before ``slack`` (which stays last)."""

    def __init__(self, prob: RopfProblem, net: Network, names: list[str]) -> None:
        super().__init__(prob)
        c = prob.compiled
        names_col = net.branch["name"].astype(str).to_numpy()
        self.k = np.array([int(np.flatnonzero(names_col == n)[0]) for n in names])
        rows = [tap_row(net, n) for n in names]
        br = net.branch.iloc[self.k]
        self.f = c.branch_from[self.k]
        self.t = c.branch_to[self.k]
        self.ys = 1.0 / (br.r_pu.to_numpy(float) + 1j * br.x_pu.to_numpy(float))
        self.ytt = self.ys + 1j * br.b_pu.to_numpy(float) / 2
        ratio = br.ratio.to_numpy(float)
        self.tau0 = np.where(ratio == 0, 1.0, ratio)
        self.rot = np.exp(1j * np.deg2rad(br.shift_deg.to_numpy(float)))
        self.p0 = np.array([float(r.tap_pos) for r in rows])
        self.lo = np.array([float(r.tap_min) for r in rows])
        self.hi = np.array([float(r.tap_max) for r in rows])
        self.dtau_dp = np.array(
            [t0 * float(r.step_percent) / 100 / turns_factor(r, int(r.tap_pos))
             for t0, r in zip(self.tau0, rows, strict=True)]
        )  # fmt: skip
        base = net.base_mva
        shunt_names = net.shunt["name"].astype(str).to_numpy()
        self.g0 = np.array(
            [net.shunt.g_mw.to_numpy(float)[shunt_names == f"no-load {n} from"].sum() / base
             for n in names]
        )  # fmt: skip
        self.y0, self.yf0, self.yt0 = self.y.copy(), self.yf.copy(), self.yt.copy()
        self.n_base = self.layout.n
        self.n = self.n_base + self.k.size

    # -- the tap block -------------------------------------------------------------------------

    def _split_taps(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nt = self.k.size
        base = np.concatenate([x[: self.n_base - 1], x[-1:]])
        return base, x[self.n_base - 1 : self.n_base - 1 + nt]

    def _entries(self, tau: np.ndarray) -> tuple[np.ndarray, ...]:
        yff = self.ytt / tau**2
        yft = -self.ys / (tau * np.conj(self.rot))
        ytf = -self.ys / (tau * self.rot)
        g = self.g0 * (self.tau0 / tau) ** 2
        return yff, yft, ytf, g

    def _set_taps(self, p: np.ndarray) -> np.ndarray:
        """Put the admittances at positions ``p`` into the dense matrices; return τ."""
        tau: np.ndarray = self.tau0 + (p - self.p0) * self.dtau_dp
        now = self._entries(tau)
        was = self._entries(self.tau0)
        self.y = self.y0.copy()
        self.yf = self.yf0.copy()
        self.yt = self.yt0.copy()
        rows = np.arange(self.k.size)
        d = [a - b for a, b in zip(now, was, strict=True)]
        np.add.at(self.y, (self.f, self.f), d[0] + d[3])
        np.add.at(self.y, (self.f, self.t), d[1])
        np.add.at(self.y, (self.t, self.f), d[2])
        self.yf[self.k[rows], self.f] = now[0]
        self.yf[self.k[rows], self.t] = now[1]
        self.yt[self.k[rows], self.f] = now[2]
        return tau

    def _derivatives(self, tau: np.ndarray) -> tuple[np.ndarray, ...]:
        """d(Y_ff + G), dY_ft, dY_tf by the position p."""
        s = self.dtau_dp
        dff = (-2 * self.ytt / tau**3 - 2 * self.g0 * self.tau0**2 / tau**3) * s
        dft = self.ys / (tau**2 * np.conj(self.rot)) * s
        dtf = self.ys / (tau**2 * self.rot) * s
        dff_branch = -2 * self.ytt / tau**3 * s  # the branch current has no shunt G
        return dff, dft, dtf, dff_branch

    # -- the NLP's functions -------------------------------------------------------------------

    def balance_t(self, x: np.ndarray) -> np.ndarray:
        base, p = self._split_taps(x)
        self._set_taps(p)
        return self.balance(base)

    def balance_jac_t(self, x: np.ndarray) -> np.ndarray:
        base, p = self._split_taps(x)
        tau = self._set_taps(p)
        jac = self.balance_jac(base)
        va, vm, _, _, _ = self.split(base)
        v = self.voltage(va, vm)
        dff, dft, dtf, _ = self._derivatives(tau)
        nb, nt = self.c.n_bus, self.k.size
        ds = np.zeros((nb, nt), dtype=complex)
        cols = np.arange(nt)
        np.add.at(ds, (self.f, cols), v[self.f] * np.conj(dff * v[self.f] + dft * v[self.t]))
        np.add.at(ds, (self.t, cols), v[self.t] * np.conj(dtf * v[self.f]))
        tap_cols = np.vstack([ds.real, ds.imag])
        return np.hstack([jac[:, :-1], tap_cols, jac[:, -1:]])

    def limits_t(self, x: np.ndarray) -> np.ndarray:
        base, p = self._split_taps(x)
        self._set_taps(p)
        return self.limits(base)

    def limits_jac_t(self, x: np.ndarray) -> np.ndarray:
        base, p = self._split_taps(x)
        tau = self._set_taps(p)
        jac = self.limits_jac(base)
        nt = self.k.size
        cols = np.zeros((jac.shape[0], nt))
        if self.rated.size:
            va, vm, _, _, _ = self.split(base)
            v = self.voltage(va, vm)
            _, dft, dtf, dff = self._derivatives(tau)
            nr = self.rated.size
            where = {int(b): r for r, b in enumerate(self.rated)}
            for j, k in enumerate(self.k):
                r = where.get(int(k))
                if r is None:
                    continue
                i_f = self.yf[k] @ v
                i_t = self.yt[k] @ v
                di_f = dff[j] * v[self.f[j]] + dft[j] * v[self.t[j]]
                di_t = dtf[j] * v[self.f[j]]
                cols[r, j] = -2 * np.real(np.conj(i_f) * di_f)
                cols[nr + r, j] = -2 * np.real(np.conj(i_t) * di_t)
        return np.hstack([jac[:, :-1], cols, jac[:, -1:]])


def relaxed_positions(
    prob: RopfProblem, net: Network, names: list[str], *, max_iter: int = 300
) -> dict[str, float] | None:
    """The continuous tap positions of the relaxed R-OPF's optimum, or ``None`` when there is
    no relaxation here (a ``to``-side changer, a large grid) or SLSQP does not converge."""
    if prob.compiled.n_bus >= SPARSE_FROM_BUSES:
        return None
    if any(tap_row(net, n).side != "from" for n in names):
        return None
    fs = _TapSpace(prob, net, names)
    before = prob.solve_pf(prob.current_x())
    if not before.converged:
        return None
    start = fs.start(before)
    x0 = np.concatenate([start[:-1], fs.p0, start[-1:]])
    bounds = fs.bounds()
    bounds = bounds[:-1] + [(float(a), float(b)) for a, b in zip(fs.lo, fs.hi, strict=True)]
    bounds.append((None, None))
    scale = 1.0 / max(1.0, float(np.abs(prob.compiled.ybus.diagonal()).max()))
    cons = [
        {"type": "eq", "fun": lambda x: scale * fs.balance_t(x),
         "jac": lambda x: scale * fs.balance_jac_t(x)},
    ]  # fmt: skip
    if fs.rated.size or fs.cap_gens.size:
        cons.append({"type": "ineq", "fun": fs.limits_t, "jac": fs.limits_jac_t})
    with threadpool_limits(limits=1, user_api="blas"):  # tiny matrices: see solve_ropf
        sol = minimize(
            lambda x: float(x[-1]),
            x0,
            jac=lambda x: np.eye(1, x.size, x.size - 1).ravel(),
            bounds=bounds,
            constraints=cons,
            method="SLSQP",
            options={"maxiter": max_iter, "ftol": 1e-12},
        )
    if not sol.success:
        return None
    _, p = fs._split_taps(sol.x)
    return dict(zip(names, (float(v) for v in p), strict=True))
