"""The ADMM aggregator (seed 001 S1, eqs. 16–19) in fixed-point integers, for the contract.

Every quantity is an integer in units of ``1/SCALE`` (``SCALE = 10⁹``) of its float counterpart in
:mod:`gridledger.grid.admm`: power flows and voltages in 1e-9 pu (1 pu = 1 MVA, so 1e-9 pu =
1 mW; voltage squared in 1e-9 pu²), duals ξ in 1e-9 $/(pu·h), the penalty ρ in 1e-9 $/(pu²·h),
over-relaxation α as a fraction ``alpha_num/alpha_den``.  Divisions round half up
(:func:`div_round`), so every node that replays the same submissions gets the same bits.

Layout: the global ``z`` of :class:`gridledger.grid.zlayout.ZLayout` (P of every line, then Q,
then every node's squared voltage).  Node i's copies
(:func:`node_rows`) are, in this order: ``P_i, Q_i, v_i, v_π(i)`` (the first, second and fourth
only when i is not the root), then ``P_k`` and ``Q_k`` for its children k in increasing order —
the same order as :class:`gridledger.grid.distflow.LocalModel` of the single node i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gridledger.grid.zlayout import ZLayout

SCALE = 10**9


def div_round(a: int, b: int) -> int:
    """a / b rounded half up (b > 0); exact integer arithmetic."""
    return (2 * a + b) // (2 * b)


def children_of(parent: list[int]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parent]
    for i, p in enumerate(parent):
        if i:
            kids[p].append(i)
    return kids


def node_rows(parent: list[int], node: int) -> list[int]:
    """Rows of z that node's copies stand for (see module doc)."""
    zl = ZLayout(len(parent))
    kids = [k for k in range(1, len(parent)) if parent[k] == node]
    rows: list[int] = []
    if node:
        rows += [zl.p_row(node), zl.q_row(node)]
    rows.append(zl.v_row(node))
    if node:
        rows.append(zl.v_row(parent[node]))
    rows += [zl.p_row(k) for k in kids] + [zl.q_row(k) for k in kids]
    return rows


@dataclass(frozen=True)
class RoundParams:
    parent: tuple[int, ...]
    horizon: int
    rho: int
    alpha_num: int
    alpha_den: int
    eps_pri: int
    eps_dual: int
    max_iter: int
    adaptive: bool
    mu: int
    tau: int

    @property
    def n_nodes(self) -> int:
        return len(self.parent)

    @property
    def n_global(self) -> int:
        return ZLayout(len(self.parent)).n_rows


def initial_xi(params: RoundParams, price: list[int]) -> list[list[list[int]]]:
    """Per node, ξ rows at the price warm start: −λ on a line's own P copy, +λ on the parent's
    (as :func:`gridledger.grid.admm.initial_xi`)."""
    layout = ZLayout(params.n_nodes)
    out = []
    for node in range(params.n_nodes):
        rows = node_rows(list(params.parent), node)
        xi = []
        for pos, row in enumerate(rows):
            if layout.is_p(row):
                own = node != 0 and pos == 0
                xi.append([-p for p in price] if own else list(price))
            else:
                xi.append([0] * params.horizon)
        out.append(xi)
    return out


@dataclass
class StepResult:
    z: list[list[int]]
    xi: list[list[list[int]]]
    primal: int  # ‖x̃ − B z‖ in 1e-9 pu (integer square root)
    dual: int  # ‖z − z_prev‖
    rho_next: int
    status: str  # "collecting" (go on) | "converged" | "max_iter"


def aggregate(
    params: RoundParams,
    iteration: int,
    z: list[list[int]],
    xi: list[list[list[int]]],
    x: list[list[list[int]]],
    rho: int,
) -> StepResult:
    """One aggregator step from all nodes' copies ``x[node][row][t]``."""
    parent = list(params.parent)
    rows_of = [node_rows(parent, i) for i in range(params.n_nodes)]
    horizon, num, den = params.horizon, params.alpha_num, params.alpha_den
    sums = [[0] * horizon for _ in range(params.n_global)]
    counts = [0] * params.n_global
    x_hat: list[list[list[int]]] = []
    for node, rows in enumerate(rows_of):
        hat_node = []
        for pos, row in enumerate(rows):
            zr, xr = z[row], x[node][pos]
            hat = [div_round(num * a + (den - num) * b, den) for a, b in zip(xr, zr, strict=True)]
            hat_node.append(hat)
            acc = sums[row]
            for t in range(horizon):
                acc[t] += hat[t]
            counts[row] += 1
        x_hat.append(hat_node)
    z_new = [[div_round(s, counts[g]) for s in sums[g]] for g in range(params.n_global)]
    primal2 = dual2 = boyd2 = 0
    xi_new: list[list[list[int]]] = []
    for node, rows in enumerate(rows_of):
        xi_node = []
        for pos, row in enumerate(rows):
            zr, zo = z_new[row], z[row]
            xr, hr, xir = x[node][pos], x_hat[node][pos], xi[node][pos]
            xi_node.append(
                [xir[t] + div_round(rho * (hr[t] - zr[t]), SCALE) for t in range(horizon)]
            )
            primal2 += sum((xr[t] - zr[t]) ** 2 for t in range(horizon))
            boyd2 += sum((zr[t] - zo[t]) ** 2 for t in range(horizon))
        xi_new.append(xi_node)
    for g in range(params.n_global):
        dual2 += sum((a - b) ** 2 for a, b in zip(z_new[g], z[g], strict=True))
    if primal2 <= params.eps_pri**2 and dual2 <= params.eps_dual**2:
        status = "converged"
    elif iteration >= params.max_iter:
        status = "max_iter"
    else:
        status = "collecting"
    rho_next = rho
    if params.adaptive and status == "collecting":
        # residual balancing on r vs ρ‖BΔz‖, compared squared: r² S² vs μ² ρ² ‖BΔz‖²
        lhs = primal2 * SCALE**2
        rhs = params.mu**2 * rho**2 * boyd2
        if lhs > rhs:
            rho_next = rho * params.tau
        elif rho**2 * boyd2 > params.mu**2 * lhs:
            rho_next = max(1, rho // params.tau)
    return StepResult(z_new, xi_new, math.isqrt(primal2), math.isqrt(dual2), rho_next, status)


def to_fixed(value: float) -> int:
    return round(value * SCALE)


def to_float(value: int) -> float:
    return value / SCALE
