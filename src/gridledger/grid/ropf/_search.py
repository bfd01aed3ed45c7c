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


@dataclass
class ConvergenceHistory:
    """The population after each iteration (seed 000 Figs. 6–7): the best fitness so far, the
    spread of the population's fitness, and how far apart its members are in the unit box.

    Fitness is the objective's value (for the R-OPF: losses plus penalty, pu); only finite values
    (converged power flows) enter the quantiles and the standard deviation.
    """

    best: list[float] = field(default_factory=list)
    median: list[float] = field(default_factory=list)
    q10: list[float] = field(default_factory=list)
    q90: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    # Root-mean-square distance of the members from the population's centroid, in the unit box:
    # the swarm's "collapse" of seed 000 Fig. 7 is this going to 0.
    position_spread: list[float] = field(default_factory=list)

    def record(self, best: float, fitness: np.ndarray, positions: np.ndarray) -> None:
        """Append one iteration; reads its arguments only (no random draws, no side effects)."""
        finite = fitness[np.isfinite(fitness)]
        nan = float("nan")
        q10, med, q90 = np.quantile(finite, [0.1, 0.5, 0.9]) if finite.size else (nan,) * 3
        self.best.append(float(best))
        self.median.append(float(med))
        self.q10.append(float(q10))
        self.q90.append(float(q90))
        self.std.append(float(finite.std()) if finite.size else nan)
        centred = positions - positions.mean(axis=0)
        self.position_spread.append(float(np.sqrt((centred**2).sum(axis=1).mean())))

    def to_dict(self, scale: float = 1.0) -> dict[str, list[float | None]]:
        """JSON-ready lists, fitness values times ``scale`` (e.g. base MVA for MW); NaN -> None."""

        def clean(values: list[float], k: float) -> list[float | None]:
            return [v * k if np.isfinite(v) else None for v in values]

        return {
            "best": clean(self.best, scale),
            "median": clean(self.median, scale),
            "q10": clean(self.q10, scale),
            "q90": clean(self.q90, scale),
            "std": clean(self.std, scale),
            "position_spread": clean(self.position_spread, 1.0),
        }


@dataclass(frozen=True)
class SearchResult:
    """Best point found (in the unit box), its fitness and the cost of finding it."""

    z_best: np.ndarray
    fitness_best: float
    evaluations: int
    iterations: int
    history: list[float] = field(default_factory=list)  # best fitness after each iteration
    convergence: ConvergenceHistory | None = None


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
