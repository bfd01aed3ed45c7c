"""The reactive optimal power flow as a problem: variables, limits, objective, constraint check.

Minimize the total active losses by moving only reactive quantities (seed 000 §III eq. 1–4,
seed 002 §5 eq. 1–3): active injections stay where the trades put them, the slack (or, islanded,
the DGs sharing the balance) supplies the losses.

Variables (``control``):

* ``"vm"`` — the voltage set-points of the ``regulator`` generators (the slack keeps its own),
  bounded by their buses' voltage limits (seed 002: 0.9–1.1 pu). Used for ieee9 / case9.
* ``"q"``  — the reactive injections of the ``regulator`` generators, bounded by their
  [qmin, qmax] and by the capability circle at their scheduled P: |Q| ≤ √(Sn² − P²)
  (seed 000 §III: "the optimization variables are the reactive power injections at the
  generation nodes"). Used for the microgrid.
* in both modes, the SVCs' reactive injections in [qmin, qmax].

Constraints: bus voltages within [vmin, vmax] (default 0.9–1.1 pu, configurable), branch current
loading ≤ 100 % of rating, every generator inside its capability circle P² + Q² ≤ Sn² and its
[qmin, qmax]. The population solvers see them as a static penalty (see :data:`PENALTY_PER_PU`);
the exact solver as explicit constraints.

Variables are exposed normalized to the unit box so every solver works on [0, 1]^d.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..compiled import CompiledNetwork
from ..network import GenRole, RegulatorControl
from ..powerflow import PowerFlowResult, run_pf, run_pf_batch

Control = RegulatorControl

# Fitness = loss_pu + PENALTY_PER_PU * violation_pu. Violations are summed in pu (voltage pu over
# the limit, loading fraction over 1, MVA over the rating / base). 1e3 makes a 1e-5 pu breach cost
# more than any loss difference a reactive set-point can make on these cases (losses are 1e-2 pu),
# so a feasible point always beats an infeasible one nearby, without making the landscape a cliff
# that the swarm cannot climb out of from an infeasible start.
PENALTY_PER_PU = 1e3
# A breach smaller than this is numerical noise (power-flow tolerance is 1e-8 pu).
FEASIBILITY_TOL_PU = 1e-6


@dataclass(frozen=True)
class RopfOptions:
    """Limits of the R-OPF; ``None`` voltage limits take the bus table's own."""

    vmin_pu: float | None = None
    vmax_pu: float | None = None
    line_limits: bool = True
    capability_limits: bool = True
    # Islanded microgrid: the DG holding the angle reference has no grid behind it, so its
    # voltage set-point is a variable too (seed 000 CASE 2 moves all three DGs).
    slack_vm_free: bool = False
    penalty_per_pu: float = PENALTY_PER_PU

    def __post_init__(self) -> None:
        lo, hi = self.vmin_pu, self.vmax_pu
        if lo is not None and not lo > 0:
            raise ValueError(f"vmin_pu must be positive, got {lo}")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"need vmin_pu < vmax_pu, got [{lo}, {hi}]")
        if not self.penalty_per_pu > 0:
            raise ValueError(f"penalty_per_pu must be positive, got {self.penalty_per_pu}")


@dataclass(frozen=True)
class Violation:
    """One broken limit, with the element and the numbers (the certificate's reasons)."""

    kind: str  # "voltage" | "line" | "capability" | "reactive" | "convergence"
    element: str
    value: float
    limit: float
    unit: str

    def __str__(self) -> str:
        if self.kind == "convergence":
            return f"power flow did not converge ({self.element})"
        rel = ">" if self.value > self.limit else "<"
        u = self.unit
        return (
            f"{self.kind} limit at {self.element}: {self.value:.4g} {u} {rel} {self.limit:.4g} {u}"
        )


@dataclass
class RopfProblem:
    """One R-OPF instance on a compiled network (its loads and active injections are fixed)."""

    compiled: CompiledNetwork
    control: Control = "vm"
    options: RopfOptions = field(default_factory=RopfOptions)

    # Start voltages for batched power flows (the current operating point); without one each
    # batch first solves a sparse power flow at the population's mean, 4x the cost of the batch.
    warm_start: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        c = self.compiled
        if self.control not in ("vm", "q"):
            raise ValueError(f"control must be 'vm' or 'q', got {self.control!r}")
        self.vmin = (
            c.vmin_pu.copy()
            if self.options.vmin_pu is None
            else np.full(c.n_bus, self.options.vmin_pu)
        )
        self.vmax = (
            c.vmax_pu.copy()
            if self.options.vmax_pu is None
            else np.full(c.n_bus, self.options.vmax_pu)
        )
        if np.any(self.vmin >= self.vmax):
            raise ValueError("voltage limits must satisfy vmin < vmax at every bus")
        self.reg = np.flatnonzero(c.gen_role == GenRole.REGULATOR)
        self.slk = (
            np.flatnonzero(c.gen_role == GenRole.SLACK)
            if self.options.slack_vm_free
            else np.zeros(0, dtype=np.int64)
        )
        self.n_svc = int(c.svc_bus.size)
        if self.reg.size + self.slk.size + self.n_svc == 0:
            raise ValueError(f"{c.name}: no regulator generator and no SVC, nothing to optimize")
        if self.control == "vm":
            lo = self.vmin[c.gen_bus[self.reg]]
            hi = self.vmax[c.gen_bus[self.reg]]
        else:
            cap = self.q_capability_pu()
            lo = np.maximum(c.gen_qmin[self.reg], -cap)
            hi = np.minimum(c.gen_qmax[self.reg], cap)
            hi = np.maximum(hi, lo)  # a DG whose P exceeds its rating: Q pinned, violation reported
        slack_bus = c.gen_bus[self.slk]
        self.lower = np.concatenate([lo, self.vmin[slack_bus], c.svc_qmin])
        self.upper = np.concatenate([hi, self.vmax[slack_bus], c.svc_qmax])

    # ---- variables ---------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.lower.size)

    def q_capability_pu(self) -> np.ndarray:
        """|Q| a regulator can give at its scheduled P on the circle (0 if P already exceeds Sn)."""
        c = self.compiled
        p = c.gen_p[self.reg]
        sn = c.gen_sn[self.reg]
        result: np.ndarray = np.sqrt(np.maximum(sn**2 - p**2, 0.0))
        return result

    def variable_names(self) -> list[str]:
        c = self.compiled
        what = "vm_pu" if self.control == "vm" else "q_pu"
        names = [f"gen{int(g)}@bus{c.bus_ids[c.gen_bus[g]]}:{what}" for g in self.reg]
        names += [f"gen{int(g)}@bus{c.bus_ids[c.gen_bus[g]]}:vm_pu" for g in self.slk]
        names += [f"svc{i}@bus{c.bus_ids[b]}:q_pu" for i, b in enumerate(c.svc_bus)]
        return names

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Unit box -> physical variables (pu), row-wise."""
        result: np.ndarray = self.lower + np.clip(z, 0.0, 1.0) * (self.upper - self.lower)
        return result

    def encode(self, x: np.ndarray) -> np.ndarray:
        span = self.upper - self.lower
        return np.where(span > 0, (np.asarray(x) - self.lower) / np.where(span > 0, span, 1.0), 0.5)

    def current_x(self) -> np.ndarray:
        """The network's own set-points (the "before R-OPF" point), clipped into the bounds."""
        c = self.compiled
        x = c.gen_vm[self.reg] if self.control == "vm" else c.gen_q[self.reg]
        result: np.ndarray = np.clip(
            np.concatenate([x, c.gen_vm[self.slk], c.svc_q]), self.lower, self.upper
        )
        return result

    def setpoints(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Variables -> (gen_vm, gen_q, svc_q) full vectors for the power flow; batched if 2-D."""
        c = self.compiled
        x = np.asarray(x, dtype=float)
        batch = x.ndim == 2
        xb = np.atleast_2d(x)
        n = xb.shape[0]
        gen_vm = np.tile(c.gen_vm, (n, 1))
        gen_q = np.tile(c.gen_q, (n, 1))
        nr = self.reg.size
        if self.control == "vm":
            gen_vm[:, self.reg] = xb[:, :nr]
        else:
            gen_q[:, self.reg] = xb[:, :nr]
        nk = self.slk.size
        gen_vm[:, self.slk] = xb[:, nr : nr + nk]
        svc_q = xb[:, nr + nk :].copy()
        if not batch:
            return gen_vm[0], gen_q[0], svc_q[0]
        return gen_vm, gen_q, svc_q

    # ---- evaluation --------------------------------------------------------------------------

    def violation_batch(
        self,
        vm_pu: np.ndarray,
        loading: np.ndarray,
        gen_p_pu: np.ndarray,
        gen_q_pu: np.ndarray,
    ) -> np.ndarray:
        """Summed limit breach per row (pu), the penalty's argument."""
        c = self.compiled
        v: np.ndarray = np.maximum(vm_pu - self.vmax, 0).sum(1) + np.maximum(
            self.vmin - vm_pu, 0
        ).sum(1)
        if self.options.line_limits:
            v = v + np.maximum(loading - 1.0, 0).sum(1)
        if self.options.capability_limits:
            s = np.hypot(gen_p_pu, gen_q_pu)
            v = v + np.maximum(s - c.gen_sn, 0).sum(1)
            v = v + np.maximum(gen_q_pu - c.gen_qmax, 0).sum(1)
            v = v + np.maximum(c.gen_qmin - gen_q_pu, 0).sum(1)
        return v

    def evaluate_x(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loss_pu, violation_pu, converged) for a batch of physical variable rows."""
        gen_vm, gen_q, svc_q = self.setpoints(np.atleast_2d(x))
        batch = run_pf_batch(
            self.compiled,
            gen_vm=gen_vm,
            gen_q=gen_q,
            svc_q=svc_q if self.n_svc else None,
            regulator_control=self.control,
            v0=self.warm_start,
        )
        viol = self.violation_batch(
            batch.vm_pu, batch.branch_loading, batch.gen_p_pu, batch.gen_q_pu
        )
        return batch.loss_pu, viol, batch.converged

    def fitness(self, z: np.ndarray) -> np.ndarray:
        """Penalized loss for a population in the unit box; non-converged points are +inf."""
        loss, viol, ok = self.evaluate_x(self.decode(np.atleast_2d(z)))
        return np.where(ok, loss + self.options.penalty_per_pu * viol, np.inf)

    def solve_pf(self, x: np.ndarray, check: bool = False) -> PowerFlowResult:
        gen_vm, gen_q, svc_q = self.setpoints(x)
        return run_pf(
            self.compiled,
            gen_vm=gen_vm,
            gen_q=gen_q,
            svc_q=svc_q if self.n_svc else None,
            regulator_control=self.control,
            check=check,
        )

    def breach(self, res: PowerFlowResult) -> float:
        """Total limit breach (pu) of a solved point, the penalty's measure; inf if diverged.
        Breaches within the feasibility tolerance count as none."""
        if not res.converged:
            return float("inf")
        if not self.violations(res):
            return 0.0
        base = self.compiled.base_mva
        v = self.violation_batch(
            res.vm_pu[None, :],
            np.where(res.rated, res.loading_pct / 100.0, 0.0)[None, :],
            (res.gen_p_mw / base)[None, :],
            (res.gen_q_mvar / base)[None, :],
        )
        return float(v[0])

    def violations(self, res: PowerFlowResult) -> list[Violation]:
        """Every limit the solved operating point breaks, named (empty list = feasible)."""
        return check_limits(self.compiled, res, self.vmin, self.vmax, self.options)


def check_limits(
    c: CompiledNetwork,
    res: PowerFlowResult,
    vmin: np.ndarray,
    vmax: np.ndarray,
    options: RopfOptions | None = None,
    tol_pu: float = FEASIBILITY_TOL_PU,
) -> list[Violation]:
    options = options or RopfOptions()
    out: list[Violation] = []
    if not res.converged:
        return [Violation("convergence", f"mismatch {res.max_mismatch_mva:.3g} MVA", 0, 0, "")]
    # Loops run over the breaches only (a Python loop over every bus of a 5,483-bus grid took
    # 17 ms per check, several checks per R-OPF).
    vm_all = res.vm_pu
    for i in np.flatnonzero((vm_all > vmax + tol_pu) | (vm_all < vmin - tol_pu)):
        vm, bus = float(vm_all[i]), c.bus_ids[i]
        if vm > vmax[i] + tol_pu:
            out.append(Violation("voltage", f"bus {bus}", vm, float(vmax[i]), "pu"))
        else:
            out.append(Violation("voltage", f"bus {bus}", vm, float(vmin[i]), "pu"))
    if options.line_limits:
        for k in np.flatnonzero(res.rated & (res.loading_pct > 100.0 * (1 + tol_pu))):
            name = f"line {res.branch_from[k]}-{res.branch_to[k]}"
            out.append(Violation("line", name, float(res.loading_pct[k]), 100.0, "%"))
    if options.capability_limits:
        base = c.base_mva
        p_all, q_all = res.gen_p_mw / base, res.gen_q_mvar / base
        breach = (
            (np.hypot(p_all, q_all) > c.gen_sn + tol_pu)
            | (q_all > c.gen_qmax + tol_pu)
            | (q_all < c.gen_qmin - tol_pu)
        )
        for g in np.flatnonzero(breach):
            p, q = p_all[g], q_all[g]
            where = f"generator {g} at bus {c.bus_ids[c.gen_bus[g]]}"
            s = float(np.hypot(p, q))
            if s > c.gen_sn[g] + tol_pu:
                out.append(
                    Violation("capability", where, s * base, float(c.gen_sn[g] * base), "MVA")
                )
            if q > c.gen_qmax[g] + tol_pu:
                out.append(
                    Violation("reactive", where, q * base, float(c.gen_qmax[g] * base), "Mvar")
                )
            elif q < c.gen_qmin[g] - tol_pu:
                out.append(
                    Violation("reactive", where, q * base, float(c.gen_qmin[g] * base), "Mvar")
                )
    return out
