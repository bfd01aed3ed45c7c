"""DLMPs split into energy, loss and voltage components (seed 001 §IV.C, after its ref. [36]).

The DLMP of node i in hour t is the dual of its real-power balance (eq. 1a) in the centralized
SOCP: the cost of one more MWh of load there.  It is split as

* energy  — the root's DLMP (the marginal cost of the generator at the substation),
* voltage — ``−Σ_j (μ̄_j − μ_j) · ∂v_j/∂p_i`` with the voltage-limit duals μ̄ (upper) and μ
  (lower) and the LinDistFlow sensitivity ``∂v_j/∂p_i = 2 Σ_{l ∈ path(i) ∩ path(j)} r_l`` (an
  injection at i raises the voltage along the path it shares with j),
* loss    — the rest: what the marginal change of the ℓ·r losses adds on the way to the root.

The voltage part uses the linearized sensitivity, so the loss part absorbs the (small) second
order terms; the three always add up to the DLMP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridledger.grid.feeders import Feeder


@dataclass(frozen=True)
class DlmpComponents:
    total: np.ndarray  # N × T, $/MWh
    energy: np.ndarray
    loss: np.ndarray
    voltage: np.ndarray


def path_resistance_matrix(feeder: Feeder) -> np.ndarray:
    """R[i, j] = Σ r over the lines shared by the paths root→i and root→j (pu)."""
    n = feeder.n_nodes
    lines_to_root: list[set[int]] = [set() for _ in range(n)]
    for i in range(1, n):
        lines_to_root[i] = lines_to_root[int(feeder.parent[i])] | {i}
    r = feeder.r_pu
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            shared = lines_to_root[i] & lines_to_root[j]
            out[i, j] = out[j, i] = float(sum(r[k] for k in shared))
    return out


def decompose(feeder: Feeder, dlmp: np.ndarray, voltage_dual: np.ndarray) -> DlmpComponents:
    """Split DLMPs (N × T) given the voltage-limit duals ``μ̄ − μ`` (N × T) of the same solve."""
    energy = np.broadcast_to(dlmp[0], dlmp.shape).copy()
    sens = 2.0 * path_resistance_matrix(feeder)  # ∂v_j / ∂p_i, symmetric
    voltage = -(sens @ voltage_dual)
    loss = dlmp - energy - voltage
    return DlmpComponents(total=dlmp, energy=energy, loss=loss, voltage=voltage)
