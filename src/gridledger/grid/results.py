"""Power-flow results: one solve (engineering units, JSON-ready) or a batch (per-unit arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PowerFlowDidNotConverge(RuntimeError):
    """Newton–Raphson stopped without meeting the tolerance; carries the last result."""

    def __init__(self, message: str, result: PowerFlowResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class PowerFlowResult:
    """One solved (or failed) power flow; arrays follow the case's own bus and branch order."""

    converged: bool
    iterations: int
    max_mismatch_pu: float
    base_mva: float
    bus_ids: np.ndarray
    vm_pu: np.ndarray
    va_deg: np.ndarray
    bus_p_mw: np.ndarray  # net injection (generation - load), shunts excluded
    bus_q_mvar: np.ndarray
    gen_p_mw: np.ndarray
    gen_q_mvar: np.ndarray
    slack_mw: float  # the balance the slack generator(s) supplied beyond their schedule
    branch_from: np.ndarray  # bus ids
    branch_to: np.ndarray
    p_from_mw: np.ndarray
    q_from_mvar: np.ndarray
    p_to_mw: np.ndarray
    q_to_mvar: np.ndarray
    loading_pct: np.ndarray  # 0 for unrated branches
    rated: np.ndarray  # bool: branch has a rating
    loss_mw: float  # series losses: the sum of the branch losses
    v_complex: np.ndarray = field(repr=False)  # the bus voltage phasors (pu)
    regulator_control: str = "vm"
    # Consumption of the shunts that model branches' no-load losses (transformer magnetizing
    # branches, line dielectric losses): g·|V|² at their buses.
    no_load_loss_mw: float = 0.0

    @property
    def series_loss_mw(self) -> float:
        return self.loss_mw

    @property
    def total_loss_mw(self) -> float:
        """Series plus no-load losses: pandapower's ``res_line.pl_mw + res_trafo.pl_mw``."""
        return self.loss_mw + self.no_load_loss_mw

    @property
    def max_mismatch_mva(self) -> float:
        return self.max_mismatch_pu * self.base_mva

    @property
    def branch_loss_mw(self) -> np.ndarray:
        result: np.ndarray = self.p_from_mw + self.p_to_mw
        return result

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``gridledger pf --json`` (plain Python types)."""
        return {
            "converged": bool(self.converged),
            "iterations": int(self.iterations),
            "max_mismatch_mva": float(self.max_mismatch_mva),
            "loss_mw": float(self.loss_mw),
            "series_loss_mw": float(self.loss_mw),
            "no_load_loss_mw": float(self.no_load_loss_mw),
            "total_loss_mw": float(self.total_loss_mw),
            "buses": [
                {"bus": _plain(b), "vm_pu": float(v), "va_deg": float(a)}
                for b, v, a in zip(self.bus_ids, self.vm_pu, self.va_deg, strict=True)
            ],
            "lines": [
                {
                    "from": _plain(f),
                    "to": _plain(t),
                    "loading_pct": float(ld) if r else None,
                    "p_from_mw": float(p),
                    "q_from_mvar": float(q),
                }
                for f, t, ld, r, p, q in zip(
                    self.branch_from,
                    self.branch_to,
                    self.loading_pct,
                    self.rated,
                    self.p_from_mw,
                    self.q_from_mvar,
                    strict=True,
                )
            ],
            "generators": [
                {"index": i, "p_mw": float(p), "q_mvar": float(q)}
                for i, (p, q) in enumerate(zip(self.gen_p_mw, self.gen_q_mvar, strict=True))
            ],
        }


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


@dataclass
class BatchPowerFlowResult:
    """``B`` power flows of one network; per-unit on ``base_mva``, one row per operating point."""

    converged: np.ndarray  # (B,) bool
    iterations: np.ndarray  # (B,) int
    max_mismatch: np.ndarray  # (B,) pu
    vm_pu: np.ndarray  # (B, nb)
    va_rad: np.ndarray  # (B, nb)
    loss_pu: np.ndarray  # (B,) sum of branch losses
    gen_p_pu: np.ndarray  # (B, ng)
    gen_q_pu: np.ndarray  # (B, ng)
    branch_loading: np.ndarray  # (B, nl) fraction of rating; 0 where unrated
    slack_pu: np.ndarray  # (B,) balance supplied by the slack generator(s) beyond schedule
    base_mva: float

    @property
    def loss_mw(self) -> np.ndarray:
        return self.loss_pu * self.base_mva

    def __len__(self) -> int:
        return int(self.converged.size)
