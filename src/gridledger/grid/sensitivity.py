"""How much a bus voltage or a branch loading moves per MW (or Mvar) injected at each bus.

At a solved AC power flow, the Newton–Raphson Jacobian ``J`` maps small changes of the voltage
angles (every bus but the reference) and magnitudes (PQ buses) to changes of the specified
injections: ``ΔS = J Δx``.  A monitored quantity ``y(x)`` (a bus voltage magnitude, a branch
current loading) changes by ``∇y · Δx = ∇y · J⁻¹ ΔS``, so one sparse solve with ``Jᵀ``
(``Jᵀ λ = ∇y``) gives ``∂y/∂P_k = λ_P[k]`` and ``∂y/∂Q_k = λ_Q[k]`` for every bus ``k`` at once:
one factorization per operating point, one triangular solve per monitored element.  The
reference bus absorbs the change (single slack), and voltage-holding buses keep their voltage.

The Jacobian is written out here (MATPOWER's ``dSbus_dV``, Zimmerman et al., "MATPOWER",
IEEE Trans. Power Syst. 26(1), 2011) rather than taken from the power-flow kernel, whose
Jacobian carries the distributed-slack column and a fixed sparsity layout of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .compiled import CompiledNetwork
from .network import RegulatorControl
from .pf_setup import make_setup
from .results import PowerFlowResult


@dataclass(frozen=True)
class Sensitivities:
    """Rows follow the monitored elements asked for; columns follow ``compiled.bus_ids``.
    ``dp[e, k]``: change of element ``e`` per MW injected at bus ``k``; ``dq``: per Mvar.
    Voltages in pu, loadings in percent of rating."""

    dp: np.ndarray
    dq: np.ndarray


def _jacobian(
    c: CompiledNetwork, v: np.ndarray, nonref: np.ndarray, pq: np.ndarray
) -> sp.csc_matrix:
    ybus = c.ybus.tocsr()
    ibus = ybus @ v
    dv = sp.diags(v)
    dvn = sp.diags(v / np.abs(v))
    ds_dva = 1j * dv @ np.conj(sp.diags(ibus) - ybus @ dv)
    ds_dvm = dv @ np.conj(ybus @ dvn) + np.conj(sp.diags(ibus)) @ dvn
    ds_dva, ds_dvm = ds_dva.tocsr(), ds_dvm.tocsr()
    top = sp.hstack([ds_dva[nonref][:, nonref].real, ds_dvm[nonref][:, pq].real])
    bottom = sp.hstack([ds_dva[pq][:, nonref].imag, ds_dvm[pq][:, pq].imag])
    return sp.vstack([top, bottom]).tocsc()


def injection_sensitivities(
    c: CompiledNetwork,
    pf: PowerFlowResult,
    buses: list[int],
    branches: list[int],
    control: RegulatorControl = "q",
) -> Sensitivities:
    """Sensitivities of the voltage magnitude at each bus position in ``buses`` and of the
    loading (%) of each branch position in ``branches`` (the side with the larger current, as
    the power flow reports it), at the converged operating point ``pf`` of ``c``."""
    if not pf.converged:
        raise ValueError("sensitivities need a converged power flow")
    st = make_setup(c, control)
    nonref, pq = st.nonref, st.pq
    v = np.asarray(pf.v_complex, dtype=complex)
    jac = _jacobian(c, v, nonref, pq)
    n_a, nb = nonref.size, c.n_bus
    col_a = np.full(nb, -1)
    col_a[nonref] = np.arange(n_a)
    col_m = np.full(nb, -1)
    col_m[pq] = n_a + np.arange(pq.size)
    grads = []
    for b in buses:
        g = np.zeros(jac.shape[0])
        if col_m[b] >= 0:  # a voltage-holding bus does not move
            g[col_m[b]] = 1.0
        grads.append(g)
    for k in branches:
        grads.append(_loading_gradient(c, v, k, col_a, col_m, jac.shape[0]))
    n_el = len(grads)
    dp = np.zeros((n_el, nb))
    dq = np.zeros((n_el, nb))
    if n_el:
        lam = spla.splu(jac).solve(np.column_stack(grads), trans="T")
        lam = lam.reshape(jac.shape[0], n_el)
        dp[:, nonref] = lam[:n_a].T / c.base_mva
        dq[:, pq] = lam[n_a:].T / c.base_mva
    return Sensitivities(dp, dq)


def _loading_gradient(
    c: CompiledNetwork, v: np.ndarray, k: int, col_a: np.ndarray, col_m: np.ndarray, n: int
) -> np.ndarray:
    g = np.zeros(n)
    if c.rate_pu[k] <= 0:
        return g
    row_f, row_t = c.yf.getrow(k), c.yt.getrow(k)
    i_f, i_t = (row_f @ v)[0], (row_t @ v)[0]
    row, i = (row_f, i_f) if abs(i_f) >= abs(i_t) else (row_t, i_t)
    if abs(i) == 0:
        return g
    row = row.tocoo()
    unit = np.conj(i) / abs(i)
    scale = 100.0 / c.rate_pu[k]
    for j, y in zip(row.col, row.data, strict=True):
        # d|I| = Re(conj(I)/|I| · dI), dI = y·(j·V_j dθ_j + V_j/|V_j| d|V_j|)
        if col_a[j] >= 0:
            g[col_a[j]] += scale * (unit * y * 1j * v[j]).real
        if col_m[j] >= 0:
            g[col_m[j]] += scale * (unit * y * v[j] / abs(v[j])).real
    return g
