"""The rows of ADMM's global consensus variable ``z``: one home for the layout.

For a radial feeder of ``n`` nodes (node 0 the root) and ``n - 1`` lines (line ``i`` joins node
``i`` to its parent), ``z`` has ``3(n - 1) + 1`` rows × T hours:

- rows ``0 .. n-2``: ``P_1 .. P_{n-1}``, the active flow of line i into its parent (pu);
- rows ``n-1 .. 2n-3``: ``Q_1 .. Q_{n-1}``, its reactive flow;
- rows ``2n-2 .. 3n-3``: ``v_0 .. v_{n-1}``, squared voltage magnitudes (pu²).

The DistFlow local models, the float aggregator, the integer aggregator of the contract and the
DER agents all index ``z`` through this class, so the layout cannot drift between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

# a row index or an array of them: every method works element-wise on either
Idx = TypeVar("Idx", int, np.ndarray)


@dataclass(frozen=True)
class ZLayout:
    n_nodes: int

    def __post_init__(self) -> None:
        if self.n_nodes < 1:
            raise ValueError(f"a feeder needs at least one node, got {self.n_nodes}")

    @property
    def n_lines(self) -> int:
        return self.n_nodes - 1

    @property
    def n_rows(self) -> int:
        return 3 * self.n_lines + 1

    def p_row(self, line: Idx) -> Idx:
        return line - 1

    def q_row(self, line: Idx) -> Idx:
        return self.n_lines + line - 1

    def v_row(self, node: Idx) -> Idx:
        return 2 * self.n_lines + node

    def is_p(self, rows: Idx) -> Idx | bool:
        return rows < self.n_lines

    def is_v(self, rows: Idx) -> Idx | bool:
        return rows >= 2 * self.n_lines

    def line_of_p(self, rows: Idx) -> Idx:
        """For P rows, the line (= its child node) each row stands for."""
        return rows + 1

    def stack(self, p: np.ndarray, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``z`` from line flows P, Q (n-1 × T) and node voltages v (n × T)."""
        return np.vstack([p, q, v])

    def flat(self, horizon: int) -> np.ndarray:
        """No flow, 1 pu everywhere: the cold start."""
        return self.stack(
            np.zeros((self.n_lines, horizon)),
            np.zeros((self.n_lines, horizon)),
            np.ones((self.n_nodes, horizon)),
        )

    def root_v(self, z: np.ndarray) -> np.ndarray:
        result: np.ndarray = z[self.v_row(0)]
        return result
