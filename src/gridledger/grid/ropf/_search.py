"""What the population-based R-OPF solvers share: the objective contract and the result type.

The solvers search the unit box [0, 1]^d (normalized variables) so their step sizes and ranges
mean the same thing on every case; :mod:`gridledger.grid.ropf.problem` maps the box to set-points.
An objective takes the whole population at once, ``(B, d) -> (B,)``, so one call is one batched
power flow: that, not the solvers' own arithmetic, is where the time goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BatchObjective = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SearchResult:
    """Best point found (in the unit box), its fitness and the cost of finding it."""

    z_best: np.ndarray
    fitness_best: float
    evaluations: int
    iterations: int
    history: list[float] = field(default_factory=list)  # best fitness after each iteration


def check_search_args(dim: int, population: int, iterations: int, minimum_population: int) -> None:
    if dim < 1:
        raise ValueError(f"dimension must be >= 1, got {dim}")
    if population < minimum_population:
        raise ValueError(f"population must be >= {minimum_population}, got {population}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")


def evaluate(objective: BatchObjective, z: np.ndarray) -> np.ndarray:
    """Call the objective and insist on one finite-or-inf float per row (NaN means 'broken')."""
    f = np.asarray(objective(z), dtype=float).reshape(-1)
    if f.shape[0] != z.shape[0]:
        raise ValueError(f"objective returned {f.shape[0]} values for {z.shape[0]} points")
    return np.where(np.isnan(f), np.inf, f)


def distinct_indices(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """For each of n rows, k distinct indices in [0, n) all different from the row's own index.

    Vectorized rejection-free draw: a random permutation of the n-1 others per row.
    """
    keys = rng.random((n, n))
    keys[np.arange(n), np.arange(n)] = np.inf  # never pick yourself
    return np.argsort(keys, axis=1)[:, :k]
