"""Seed 000 Figs. 6–7 for our population solvers: the best loss per iteration, the spread of the
population's losses, and how the population closes in on the optimum in the search space."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._search import ConvergenceHistory


def plot_convergence(
    history: ConvergenceHistory | None, path: str | Path, title: str = "", scale: float = 100.0
) -> Path:
    """Write a two-panel PNG of ``history`` to ``path``; fitness is multiplied by ``scale``
    (the case's base MVA gives MW). Raises ``ValueError`` without a history (exact solver)."""
    if history is None or not history.best:
        raise ValueError("no convergence history: only gso, sbde and de record one")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    it = np.arange(1, len(history.best) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.fill_between(
        it,
        np.asarray(history.q10) * scale,
        np.asarray(history.q90) * scale,
        alpha=0.25,
        label="population, 10–90 %",
    )
    top.plot(it, np.asarray(history.median) * scale, lw=1, label="population median")
    top.plot(it, np.asarray(history.best) * scale, lw=2, color="k", label="best so far")
    top.set_ylabel("losses + penalty (MW)")
    top.set_yscale("log")
    top.legend(loc="upper right")
    top.set_title(title or "convergence")
    bottom.plot(it, history.position_spread, color="tab:red")
    bottom.set_ylabel("position spread\n(RMS distance to centroid, unit box)")
    bottom.set_yscale("log")
    bottom.set_xlabel("iteration")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out
