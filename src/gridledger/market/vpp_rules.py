"""Seed 003's dual step (the VPP contract's Func A) and the P2P payments, in integers.

Same arithmetic as :func:`gridledger.grid.vpp.dual_step`, on integers in 1e-9 kWh (trades,
auxiliary trades) and 1e-9 $/kWh (duals λ); ρ in 1e-9 $/kWh².  Halvings and the division by ρ
round half up, so every validator gets the same bits.

The convergence error is the seed's (Algorithm 1, line 4): ``Σ_u Σ_v ‖p'_uv − p_uv‖``, the sum
over ordered pairs of the Euclidean norm over the hours (each norm an integer square root, so
the sum is at most n² units below the exact one).

Payments (:func:`pair_bills`).  At convergence every prosumer's primal problem (eq. 4) holds
``−λ_uv p_uv`` beside its P2P cost ``π_P2P p_uv``: it traded as if a kWh from v cost
``π_P2P − λ_uv[t]``, and the dual step keeps ``λ_uv = λ_vu`` (up to rounding), so buyer and
seller face the same price.  That is the ADMM's clearing price of the pair and hour; it is paid
clipped to ``[0, max_price]`` (the operator's cap).  The quantity paid is the smallest of what
the round agreed (``p'_uv``), what the buyer itself last asked for (``p_uv``) and what the
seller itself last offered (``−p_vu``): nobody pays or is paid for more than it agreed to.
"""

from __future__ import annotations

import math

import numpy as np

SCALE = 10**9
UTOKEN_PER_USD = 10**6
LAMBDA_PER_UTOKEN = SCALE // UTOKEN_PER_USD  # λ (1e-9 $/kWh) per utoken/kWh


def _div_round(a: np.ndarray, b: int) -> np.ndarray:
    return (2 * a + b) // (2 * b)


def pair_residual(aux: np.ndarray, p: np.ndarray) -> int:
    """``Σ_u Σ_v ‖p'_uv − p_uv‖`` over the hours, each norm an integer square root."""
    diff = aux - p
    n = p.shape[0]
    return sum(
        math.isqrt(int((diff[u, v] ** 2).sum())) for u in range(n) for v in range(n) if u != v
    )


def dual_step_fixed(
    p: np.ndarray, aux: np.ndarray, lam: np.ndarray, rho: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer arrays (n × n × T, dtype object: exact Python ints); returns (p', λ, residual)."""
    p_t, lam_t = p.transpose(1, 0, 2), lam.transpose(1, 0, 2)
    # p'_uv = ((p_uv − p_vu) − (λ_uv − λ_vu)·S/ρ) / 2, antisymmetric by construction
    half_diff = p - p_t
    dual_term = _div_round((lam - lam_t) * SCALE, rho)
    upper = _div_round(half_diff - dual_term, 2)
    # round once per pair (u < v) and mirror it, so p'_vu = −p'_uv exactly
    n = p.shape[0]
    above = (np.arange(n)[:, None] < np.arange(n)[None, :])[:, :, None]
    aux_new = np.where(above, upper, -upper.transpose(1, 0, 2))
    lam_new = lam + _div_round(rho * (aux_new - p), SCALE)
    return aux_new, lam_new, pair_residual(aux_new, p)


def clearing_price(lam_uv: int, price: int, max_price: int) -> int:
    """utoken/kWh for one pair and hour: ``π_P2P − λ_uv`` clipped to ``[0, max_price]``."""
    adjusted = price - (2 * lam_uv + LAMBDA_PER_UTOKEN) // (2 * LAMBDA_PER_UTOKEN)
    return min(max(adjusted, 0), max_price)


def pair_bills(
    aux: list[list[list[int]]],
    lam: list[list[list[int]]],
    own: list[list[list[int]] | None],
    price: int,
    max_price: int,
) -> list[list[int]]:
    """``bill[u][v]``: utoken that buyer u owes seller v for the whole horizon.

    ``own[u]`` is u's last submission (rows over the others in index order), or None when u's
    own word is not known — then only ``p'`` and the other side cap the quantity (an agent
    bounding its own bill passes None for everybody else).  Per pair, ``Σ_t q·price`` is
    divided by 1e9 once and rounded down (in the buyer's favour)."""
    n = len(aux)
    bills = [[0] * n for _ in range(n)]
    for u in range(n):
        for v in range(n):
            if u == v:
                continue
            total = 0
            own_u, own_v = own[u], own[v]
            row_u = own_u[v - (v > u)] if own_u is not None else None
            row_v = own_v[u - (u > v)] if own_v is not None else None
            for t, agreed in enumerate(aux[u][v]):
                q = agreed
                if row_u is not None:
                    q = min(q, row_u[t])
                if row_v is not None:
                    q = min(q, -row_v[t])
                if q > 0:
                    total += q * clearing_price(lam[u][v][t], price, max_price)
            bills[u][v] = total // SCALE
    return bills


def settle_bills(
    bills: list[list[int]], escrow: list[int], accepted: list[bool]
) -> tuple[list[list[int]], list[int]]:
    """(``paid[u][v]``, ``refund[u]``): a bill is paid only between two prosumers who both
    accepted the round; a buyer pays at most its escrow (every seller then gets the same
    fraction of its bill, rounded down); whatever is left of the escrow goes back."""
    n = len(bills)
    paid = [[0] * n for _ in range(n)]
    refund = list(escrow)
    for u in range(n):
        due = [bills[u][v] if accepted[u] and accepted[v] else 0 for v in range(n)]
        total = sum(due)
        if total == 0:
            continue
        for v in range(n):
            paid[u][v] = due[v] if total <= escrow[u] else due[v] * escrow[u] // total
        refund[u] = escrow[u] - sum(paid[u])
    return paid, refund


def contract_step(
    p: np.ndarray, aux: np.ndarray, lam: np.ndarray, rho: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`dual_step_fixed` seen from floats (kWh, $/kWh): pass it to
    :func:`gridledger.grid.vpp.solve_vpp_admm` to run off chain exactly what the contract runs."""
    a, m, r = dual_step_fixed(to_fixed(p), to_fixed(aux), to_fixed(lam), round(rho * SCALE))
    return a.astype(float) / SCALE, m.astype(float) / SCALE, r / SCALE


def to_fixed(a: np.ndarray) -> np.ndarray:
    fixed: np.ndarray = np.vectorize(lambda v: round(v * SCALE), otypes=[object])(a)
    return fixed


def to_float(a: np.ndarray) -> np.ndarray:
    floats: np.ndarray = np.vectorize(lambda v: v / SCALE, otypes=[float])(a)
    return floats
