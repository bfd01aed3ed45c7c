"""The population solvers' per-iteration history (seed 000 Figs. 6–7) and `ropf --plot`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from gridledger.cli import main
from gridledger.grid.ropf.de import minimize_de
from gridledger.grid.ropf.gso import minimize_gso
from gridledger.grid.ropf.sbde import minimize_sbde

CENTRE = np.array([0.3, 0.7, 0.55])


def bowl(z: np.ndarray) -> np.ndarray:
    return 1.0 + ((z - CENTRE) ** 2 * np.array([1.0, 3.0, 0.5])).sum(axis=1)


# What the solvers returned before they recorded a history (main at 6c8e228, seed 7, 30
# iterations): recording reads the population and draws no random numbers, so these must not move.
BEFORE_HISTORY = {
    minimize_gso: ([0.31503957412639116, 0.7060944056082138, 0.5656762390453883],
                   1.0004604863643596, 930),
    minimize_sbde: ([0.2998942351166796, 0.7002608621952969, 0.5504793978725043],
                    1.0000003302446254, 713),
    minimize_de: ([0.29874735028694577, 0.6993513317770488, 0.5526283215515038],
                  1.000006285479783, 713),
}  # fmt: skip


@pytest.mark.parametrize("search", list(BEFORE_HISTORY), ids=lambda f: f.__name__)
def test_recording_the_history_changes_no_result(search):
    z, fit, evaluations = BEFORE_HISTORY[search]
    res = search(bowl, 3, np.random.default_rng(7), iterations=30)
    np.testing.assert_allclose(res.z_best, z, rtol=0, atol=1e-15)
    assert res.fitness_best == pytest.approx(fit, rel=1e-15)
    assert res.evaluations == evaluations


@pytest.mark.parametrize("search", list(BEFORE_HISTORY), ids=lambda f: f.__name__)
def test_history_is_consistent(search):
    res = search(bowl, 3, np.random.default_rng(1))  # the solvers' default 100 iterations
    h = res.convergence
    assert h is not None
    for series in (h.best, h.median, h.q10, h.q90, h.std, h.position_spread):
        assert len(series) == res.iterations == 100
    assert h.best == res.history
    assert all(b <= a for a, b in itertools.pairwise(h.best))  # never worse
    assert h.best[-1] == pytest.approx(res.fitness_best)
    assert all(b <= lo + 1e-15 <= m + 2e-15 <= hi + 3e-15
               for b, lo, m, hi in zip(h.best, h.q10, h.median, h.q90, strict=True))  # fmt: skip
    # The population closes in on the minimum (seed 000 Fig. 7's "collapse"): the swarm to a
    # tenth of its first spread (its step stays finite), the DEs by orders of magnitude more.
    assert h.position_spread[-1] < 0.2 * h.position_spread[0]


def test_spread_is_measured_from_the_population():
    """An objective that records the populations lets us recompute the statistics by hand."""
    seen = []

    def spy(z):
        seen.append(z.copy())
        return bowl(z)

    res = minimize_de(spy, 3, np.random.default_rng(2), iterations=5)
    # DE keeps the better of parent and trial; rebuild the population after iteration 1.
    pop, trial = seen[0], seen[1]
    better = bowl(trial) <= bowl(pop)
    pop1 = np.where(better[:, None], trial, pop)
    fit1 = bowl(pop1)
    h = res.convergence
    assert h.median[0] == pytest.approx(float(np.median(fit1)), rel=1e-12)
    assert h.std[0] == pytest.approx(float(fit1.std()), rel=1e-12)
    rms = float(np.sqrt(((pop1 - pop1.mean(axis=0)) ** 2).sum(axis=1).mean()))
    assert h.position_spread[0] == pytest.approx(rms, rel=1e-12)


BEFORE_HISTORY_IEEE9 = {  # `ropf ieee9 --method M --seed 3` at 6c8e228: set-points and loss, pu
    "gso": ([1.0809485363072433, 1.0528562181248635], 0.04659144894595177),
    "sbde": ([1.0809222724956864, 1.0528450476847535], 0.04659144867495704),
    "de": ([1.0809222599960693, 1.052845048855022], 0.04659144867495721),
}


@pytest.mark.parametrize("method", list(BEFORE_HISTORY_IEEE9))
def test_plot_writes_a_png_and_keeps_the_optimum(tmp_path, capsys, method):
    png = tmp_path / f"{method}.png"
    code = main(["ropf", "ieee9", "--method", method, "--seed", "3", "--plot", str(png), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    x, loss_pu = BEFORE_HISTORY_IEEE9[method]
    assert doc["setpoints"]["G2@2:vm_pu"] == pytest.approx(x[0], abs=1e-12)
    assert doc["setpoints"]["G3@3:vm_pu"] == pytest.approx(x[1], abs=1e-12)
    assert doc["loss_after_mw"] == pytest.approx(loss_pu * 100, rel=1e-12)
    best = doc["convergence"]["best"]
    assert len(best) == doc["iterations"]
    assert all(b <= a for a, b in itertools.pairwise(best))
    assert best[-1] == pytest.approx(doc["loss_after_mw"], rel=1e-9)  # feasible: no penalty
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)  # decodes the whole file: a truncated PNG fails here
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # something was drawn


def test_plot_bad_inputs(tmp_path, capsys):
    png = tmp_path / "exact.png"
    assert main(["ropf", "ieee9", "--plot", str(png)]) == 2
    assert "--plot draws a population's convergence" in capsys.readouterr().err
    assert not png.exists()
    missing = tmp_path / "no" / "such" / "dir.png"
    assert main(["ropf", "ieee9", "--method", "de", "--plot", str(missing)]) == 2
    assert f"--plot {missing}: cannot write it" in capsys.readouterr().err
