"""Transformer taps as R-OPF controls: discrete positions around the continuous R-OPF.

Seed 002 optimizes three transformer taps with the generator voltages and the SVC.  A tap is
discrete — an on-load tap changer moves in steps — and it changes the admittance matrix that
every other R-OPF solver keeps fixed; so the taps are searched on their integer lattice and,
at each tap vector, the remaining reactive controls are optimized by the R-OPF of
:func:`~gridledger.grid.ropf.solve_ropf` (``exact``: SLSQP, or IPOPT from 35 buses on; or a
population method) on the network with those taps (:func:`gridledger.grid.taps.at_positions`).

* ``search="local"``: relaxed, rounded, then a pattern search.  Below 35 buses, with every
  changer on its branch's ``from`` side, the R-OPF is first solved with the positions as
  continuous variables (:mod:`.tap_relax`, SLSQP) and its optimum rounded to the nearest
  steps; the pattern search starts there with single steps (else at the current positions
  with a step ``s``, a power of two from a quarter of the widest range down to 1).  It
  evaluates the ``±s`` move of every tap and takes the best improvement until none improves,
  then halves ``s``; it ends at a point no single one-step move improves (a discrete local
  optimum), after far fewer R-OPFs than the lattice has points.
* ``search="exhaustive"``: every tap vector (refused above :data:`MAX_EXHAUSTIVE` vectors) —
  the reference the tests hold the local search to.

Points are ranked feasible first, then by the summed limit breach, then by losses, and the
current positions are always evaluated, so the answer is never worse than the R-OPF with the
taps left where they are.  The relaxation only picks the start: rounding a continuous optimum
can land on a worse or infeasible vector, and on large grids (IPOPT, whose hand-written
Hessian has no tap terms) there is none, so the discrete search has the last word.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..compiled import compile_network
from ..network import Network
from ..taps import at_positions, select_taps, tap_positions, tap_range
from . import solve_ropf
from .exact import RopfResult
from .problem import Control, RopfOptions, RopfProblem

MAX_EXHAUSTIVE = 20_000


@dataclass
class TapRopfResult:
    """The best tap positions found and the R-OPF at them."""

    positions: dict[str, int]  # every moved tap changer's chosen position
    start_positions: dict[str, int]
    result: RopfResult  # R-OPF on the network with the taps at ``positions``
    fixed: RopfResult  # R-OPF with the taps at ``start_positions`` (taps not controls)
    network: Network  # the network with the taps at ``positions``
    problem: RopfProblem  # the R-OPF problem at ``positions`` (names its other variables)
    evaluations: int  # R-OPF solves
    seconds: float
    scanned: dict[tuple[int, ...], float] = field(default_factory=dict)  # loss_pu per vector

    @property
    def loss_before_pu(self) -> float:
        """Losses at the network's own set-points and taps (nothing optimized)."""
        return self.fixed.loss_before_pu


# (infeasible?, breach, losses): feasible first, then the smaller breach, then the lower losses
_Rank = tuple[int, float, float]


def _rank(problem: RopfProblem, res: RopfResult) -> _Rank:
    breach = problem.breach(res.pf_after)
    return (0 if res.feasible else 1, 0.0 if res.feasible else breach, res.loss_after_pu)


def solve_ropf_with_taps(
    net: Network,
    control: Control = "vm",
    *,
    taps: str | Sequence[str] = "all",
    options: RopfOptions | None = None,
    method: str = "exact",
    rng: int = 0,
    search: str = "local",
    relax: bool = True,
) -> TapRopfResult:
    """R-OPF with the named tap changers (``"all"``: every one of ``net.tap``) as controls.

    ``rng`` seeds a population method the same way at every tap vector, so the search is
    reproducible; ``relax=False`` starts the search at the current positions.
    Raises ``NetworkError`` naming a tap control the network cannot move.
    """
    if search not in ("local", "exhaustive"):
        raise ValueError(f"search must be 'local' or 'exhaustive', got {search!r}")
    t0 = time.perf_counter()
    names = select_taps(net, taps)
    ranges = [tap_range(net, n) for n in names]
    start = tuple(tap_positions(net)[n] for n in names)
    options = options or RopfOptions()
    solved: dict[tuple[int, ...], tuple[_Rank, RopfResult, RopfProblem, Network]] = {}

    def evaluate(pos: tuple[int, ...]) -> _Rank:
        if pos not in solved:
            tapped = at_positions(net, dict(zip(names, pos, strict=True)))
            problem = RopfProblem(compile_network(tapped), control, options)
            res = solve_ropf(problem, method, rng=rng)
            solved[pos] = (_rank(problem, res), res, problem, tapped)
        return solved[pos][0]

    evaluate(start)
    if search == "exhaustive":
        count = math.prod(len(r) for r in ranges)
        if count > MAX_EXHAUSTIVE:
            raise ValueError(
                f"{count} tap vectors over {names}: more than {MAX_EXHAUSTIVE}; use search='local'"
            )
        for pos in itertools.product(*ranges):
            evaluate(pos)
        best = min(solved, key=lambda p: solved[p][0])
    else:
        relaxed = _rounded_relaxation(solved[start][2], net, names, ranges) if relax else None
        # from the rounded relaxation the optimum is near: single steps only
        best = _pattern_search(relaxed or start, ranges, evaluate, near=relaxed is not None)
        if solved[start][0] < solved[best][0]:
            best = start
    _, res, problem, tapped = solved[best]
    return TapRopfResult(
        positions=dict(zip(names, best, strict=True)),
        start_positions=dict(zip(names, start, strict=True)),
        result=res,
        fixed=solved[start][1],
        network=tapped,
        problem=problem,
        evaluations=len(solved),
        seconds=time.perf_counter() - t0,
        scanned={p: v[1].loss_after_pu for p, v in solved.items()},
    )


def _rounded_relaxation(
    problem: RopfProblem, net: Network, names: list[str], ranges: list[range]
) -> tuple[int, ...] | None:
    """The relaxed optimum's positions rounded to the nearest step, or None without one."""
    from .tap_relax import relaxed_positions

    relaxed = relaxed_positions(problem, net, names)
    if relaxed is None:
        return None
    return tuple(
        min(max(round(relaxed[n]), r.start), r.stop - 1) for n, r in zip(names, ranges, strict=True)
    )


def _pattern_search(
    start: tuple[int, ...],
    ranges: list[range],
    evaluate: Callable[[tuple[int, ...]], _Rank],
    near: bool = False,
) -> tuple[int, ...]:
    widest = max(len(r) for r in ranges)
    step = 1 if near else 1 << max(0, int(np.floor(np.log2(max(widest // 4, 1)))))
    best, best_rank = start, evaluate(start)
    while step >= 1:
        improved = True
        while improved:
            improved = False
            candidates = []
            for i, r in enumerate(ranges):
                for d in (step, -step):
                    moved = list(best)
                    moved[i] += d
                    if r.start <= moved[i] < r.stop:
                        candidates.append(tuple(moved))
            for pos in candidates:
                rank = evaluate(pos)
                if rank < best_rank:
                    best, best_rank, improved = pos, rank, True
        step //= 2
    return best
