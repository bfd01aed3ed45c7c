"""Seed 003's dual step (the VPP contract's Func A) in fixed-point integers.

Same arithmetic as :func:`gridledger.grid.vpp.dual_step`, on integers in 1e-9 kWh (trades,
auxiliary trades) and 1e-9 $/kWh (duals λ); ρ in 1e-9 $/kWh².  Halvings and the division by ρ
round half up, so every validator gets the same bits.
"""

from __future__ import annotations

import math

import numpy as np

SCALE = 10**9


def _div_round(a: np.ndarray, b: int) -> np.ndarray:
    return (2 * a + b) // (2 * b)


def dual_step_fixed(
    p: np.ndarray, aux: np.ndarray, lam: np.ndarray, rho: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer arrays (n × n × T, dtype object: exact Python ints); returns (p', λ, ‖p' − p‖)."""
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
    residual = math.isqrt(int(((aux_new - p) ** 2).sum()))
    return aux_new, lam_new, residual


def to_fixed(a: np.ndarray) -> np.ndarray:
    fixed: np.ndarray = np.vectorize(lambda v: round(v * SCALE), otypes=[object])(a)
    return fixed


def to_float(a: np.ndarray) -> np.ndarray:
    floats: np.ndarray = np.vectorize(lambda v: v / SCALE, otypes=[float])(a)
    return floats
