"""Reactive optimal power flow: minimize losses by moving reactive set-points only.

``solve_ropf(problem, method, rng)`` runs one of the solvers on a :class:`RopfProblem`:

* ``exact`` — full-space SLSQP with analytic derivatives (:mod:`.exact`), the reference;
* ``gso``   — Glow-worm Swarm Optimization (seed 000), :mod:`.gso`;
* ``sbde``  — Self-Balanced Differential Evolution (seed 002), :mod:`.sbde`;
* ``de``    — plain DE/rand/1/bin, the baseline, :mod:`.de`.

The population methods evaluate a whole generation with one batched power flow per iteration,
treat limits by the static penalty of :mod:`.problem`, start from a random population plus the
current operating point (so the answer is never worse than doing nothing), and are reproducible
for a given seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ._search import SearchResult
from .de import minimize_de
from .exact import RopfResult, solve_exact
from .gso import minimize_gso
from .problem import Control, RopfOptions, RopfProblem, Violation, check_limits
from .sbde import minimize_sbde

METHODS = ("exact", "gso", "sbde", "de")
_SEARCH: dict[str, Callable[..., SearchResult]] = {
    "gso": minimize_gso,
    "sbde": minimize_sbde,
    "de": minimize_de,
}

__all__ = [
    "METHODS",
    "Control",
    "RopfOptions",
    "RopfProblem",
    "RopfResult",
    "Violation",
    "check_limits",
    "solve_ropf",
]


def solve_ropf(
    problem: RopfProblem,
    method: str = "exact",
    rng: np.random.Generator | int | None = None,
    **solver_options: float,
) -> RopfResult:
    """Solve ``problem`` with ``method``; ``rng`` (a Generator or a seed) drives the searches.

    Raises ``ValueError`` for an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown R-OPF method {method!r}; expected one of {', '.join(METHODS)}")
    # The matrices here are tiny: a multi-threaded BLAS spends more time waking threads than
    # computing (measured 10x slower SLSQP on a busy 2-core machine).
    with threadpool_limits(limits=1, user_api="blas"):
        if method == "exact":
            # the options are typed for the searches (floats); solve_exact checks its own names
            return solve_exact(problem, **solver_options)  # type: ignore[arg-type]
        return _solve_search(problem, method, np.random.default_rng(rng), solver_options)


def _solve_search(
    problem: RopfProblem, method: str, rng: np.random.Generator, options: dict[str, Any]
) -> RopfResult:
    t0 = time.perf_counter()
    x0 = problem.current_x()
    before = problem.solve_pf(x0)
    if problem.warm_start is None and before.converged:
        problem.warm_start = before.v_complex
    found = _SEARCH[method](
        problem.fitness, problem.dim, rng, initial=problem.encode(x0)[None, :], **options
    )
    x = problem.decode(found.z_best)
    after = problem.solve_pf(x)
    violations = problem.violations(after)
    base = problem.compiled.base_mva
    return RopfResult(
        method=method,
        control=problem.control,
        x=x,
        variable_names=problem.variable_names(),
        loss_before_pu=before.loss_mw / base,
        loss_after_pu=after.loss_mw / base,
        feasible=after.converged and not violations,
        violations=violations,
        evaluations=found.evaluations + 2,
        iterations=found.iterations,
        seconds=time.perf_counter() - t0,
        pf_after=after,
        pf_before=before,
        history=found.history,
        convergence=found.convergence,
    )
