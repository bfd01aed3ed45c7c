"""Plain differential evolution, DE/rand/1/bin (Storn & Price 1997): the baseline the seeds'
variants are measured against. Minimizes a batched objective on the unit box."""

from __future__ import annotations

import numpy as np

from ._search import (
    BatchObjective,
    ConvergenceHistory,
    SearchResult,
    check_search_args,
    distinct_indices,
    evaluate,
)

DE_POPULATION = 23
DE_F = 0.5
DE_CR = 0.4
DE_ITERATIONS = 100


def binomial_crossover(
    rng: np.random.Generator, target: np.ndarray, mutant: np.ndarray, cr: float
) -> np.ndarray:
    """Take each coordinate from the mutant with probability ``cr``, and at least one (j_rand)."""
    n, d = target.shape
    take = rng.random((n, d)) <= cr
    take[np.arange(n), rng.integers(0, d, size=n)] = True
    return np.where(take, mutant, target)


def reflect_into_box(z: np.ndarray) -> np.ndarray:
    """Fold points that left [0, 1] back inside (keeps diversity better than clipping)."""
    z = np.where(z < 0, -z, z)
    z = np.where(z > 1, 2 - z, z)
    result: np.ndarray = np.clip(z, 0.0, 1.0)
    return result


def minimize_de(
    objective: BatchObjective,
    dim: int,
    rng: np.random.Generator,
    *,
    population: int = DE_POPULATION,
    iterations: int = DE_ITERATIONS,
    f: float = DE_F,
    cr: float = DE_CR,
    initial: np.ndarray | None = None,
) -> SearchResult:
    """DE/rand/1/bin; ``initial`` (k, dim) seeds the first k individuals (the current point)."""
    check_search_args(dim, population, iterations, minimum_population=4)
    pop = rng.random((population, dim))
    if initial is not None:
        init = np.atleast_2d(np.asarray(initial, dtype=float))[:population]
        pop[: init.shape[0]] = np.clip(init, 0.0, 1.0)
    fit = evaluate(objective, pop)
    evaluations = population
    history = []
    convergence = ConvergenceHistory()
    for _ in range(iterations):
        r = distinct_indices(rng, population, 3)
        mutant = pop[r[:, 0]] + f * (pop[r[:, 1]] - pop[r[:, 2]])
        trial = reflect_into_box(binomial_crossover(rng, pop, mutant, cr))
        trial_fit = evaluate(objective, trial)
        evaluations += population
        better = trial_fit <= fit
        pop[better] = trial[better]
        fit[better] = trial_fit[better]
        history.append(float(fit.min()))
        convergence.record(history[-1], fit, pop)
    best = int(np.argmin(fit))
    return SearchResult(
        pop[best].copy(), float(fit[best]), evaluations, iterations, history, convergence
    )
