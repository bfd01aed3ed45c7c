"""The population searches on functions with known minima (no power flow involved)."""

from __future__ import annotations

import numpy as np
import pytest

from gridledger.grid.ropf.de import minimize_de
from gridledger.grid.ropf.gso import minimize_gso
from gridledger.grid.ropf.sbde import minimize_sbde

SEARCHES = [minimize_gso, minimize_sbde, minimize_de]
CENTRE = np.array([0.3, 0.7, 0.55])


def bowl(z: np.ndarray) -> np.ndarray:
    return 1.0 + ((z - CENTRE) ** 2 * np.array([1.0, 3.0, 0.5])).sum(axis=1)


@pytest.mark.parametrize("search", SEARCHES)
def test_finds_the_bowl_minimum(search):
    res = search(bowl, 3, np.random.default_rng(0))
    assert res.fitness_best - 1.0 < 1e-4
    np.testing.assert_allclose(res.z_best, CENTRE, atol=2e-2)
    assert res.fitness_best == pytest.approx(float(bowl(res.z_best[None, :])[0]))


@pytest.mark.parametrize("search", SEARCHES)
def test_history_never_gets_worse_and_counts_evaluations(search):
    calls = []

    def counted(z):
        calls.append(z.shape[0])
        return bowl(z)

    res = search(counted, 3, np.random.default_rng(1), iterations=20)
    assert all(b <= a for a, b in zip(res.history, res.history[1:], strict=False))
    assert res.evaluations == sum(calls)
    assert len(calls) == 21  # the whole population in one call per iteration, plus the start


@pytest.mark.parametrize("search", SEARCHES)
def test_infinite_fitness_is_survivable(search):
    # Half the box "does not converge": the search must still find the finite optimum.
    def half(z):
        return np.where(z[:, 0] > 0.5, np.inf, bowl(z))

    res = search(half, 3, np.random.default_rng(2))
    assert np.isfinite(res.fitness_best)
    assert res.z_best[0] <= 0.5


@pytest.mark.parametrize("search", SEARCHES)
def test_initial_point_is_used(search):
    res = search(bowl, 3, np.random.default_rng(5), iterations=0, initial=CENTRE[None, :])
    assert res.fitness_best == pytest.approx(1.0)


@pytest.mark.parametrize("search", SEARCHES)
def test_bad_arguments(search):
    with pytest.raises(ValueError, match="dimension"):
        search(bowl, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="population"):
        search(bowl, 3, np.random.default_rng(0), population=1)
    with pytest.raises(ValueError, match="returned 1 values for"):
        search(lambda z: np.ones(1), 3, np.random.default_rng(0))
