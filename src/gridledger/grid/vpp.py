"""Seed 003's virtual power plant: prosumers trading peer to peer, coordinated by ADMM.

Prosumer u, hourly slots t of a day (all energies in kWh per 1 h slot, i.e. kW):

* cost (seed 003 eq. 1): ``C_u = α Σ g + β max_t g + w_FL Σ (l_FL − L_ref)² + w_BA Σ (c + d)
  + π_P2P Σ_v Σ_t p_uv − Σ π_AS[t] e_AS[t]`` — grid energy and peak charge, discomfort of the
  flexible appliances, battery wear, P2P payments, ancillary-service reward;
* balance (eq. 2): ``l_FL + L_IF + c = r + g + d + Σ_{v≠u} p_uv`` with ``0 ≤ r ≤ r_forecast``
  (curtailment allowed), ``g ≥ 0`` (buying from the grid), battery ``b[t] = b[t−1] + (c − d)η``
  within ``[0, B]``, ancillary reserve ``0 ≤ e_AS ≤ b`` (energy kept in store for the VPP), and
  the flexible appliances keep their daily energy ``Σ l_FL = Σ L_ref`` within ``[0, l_max]``;
* trades are reciprocal: ``p_uv = −p_vu`` (what u buys from v, v sells to u).

ADMM (eqs. 4–5): each prosumer solves its primal problem with the penalty
``ρ/2 (p'_uv − p_uv)² − λ_uv p_uv`` given the auxiliary ``p'`` and duals ``λ`` (:class:`Prosumer`);
the dual problem — the contract's step — has a closed form per pair
(:func:`dual_step`; the contract runs the same in integers,
:func:`gridledger.market.vpp_rules.dual_step_fixed`): ``p'_uv = (p_uv − p_vu)/2 −
(λ_uv − λ_vu)/(2ρ)``, ``p'_vu = −p'_uv``, then ``λ ← λ + ρ (p' − p)``.

Profiles (:func:`generate_profiles`, seeded): PV clear-sky bell × daily cloudiness, small wind
from an AR(1) Weibull-like speed through a cubic power curve, a two-peak residential inflexible
load with noise, evening flexible appliance cycles (washer, dryer, dishwasher).  Real profiles are
read from a CSV with :func:`load_profiles_csv`.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cvxpy as cp
import numpy as np

HOURS_PER_DAY = 24
DualStep = Callable[
    [np.ndarray, np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray, float]
]


def dual_step(
    p: np.ndarray, aux: np.ndarray, lam: np.ndarray, rho: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Seed 003 eq. 5 and the dual ascent, for all pairs at once (n × n × T arrays).

    Minimizing ``ρ/2 (p'_uv − p_uv)² + ρ/2 (p'_vu − p_vu)² + λ_uv p'_uv + λ_vu p'_vu`` subject to
    ``p'_vu = −p'_uv`` gives ``p'_uv = (p_uv − p_vu)/2 − (λ_uv − λ_vu)/(2ρ)``; then
    ``λ ← λ + ρ (p' − p)``.  Returns (p', λ, the seed's convergence error
    ``Σ_u Σ_v ‖p'_uv − p_uv‖``, norms over the hours)."""
    p_t, lam_t = p.transpose(1, 0, 2), lam.transpose(1, 0, 2)
    aux_new = (p - p_t) / 2 - (lam - lam_t) / (2 * rho)
    lam_new = lam + rho * (aux_new - p)
    return aux_new, lam_new, float(np.linalg.norm(aux_new - p, axis=2).sum())


class VppError(ValueError):
    """Bad prosumer data (the message names the prosumer and the field)."""


@dataclass(frozen=True)
class VppPrices:
    grid_usd_per_kwh: float = 0.20  # α
    peak_usd_per_kw_day: float = 0.50  # β, on the day's highest grid draw
    p2p_usd_per_kwh: float = 0.12  # π_P2P, below the grid rate
    ancillary_usd_per_kwh: tuple[float, ...] = ()  # π_AS[t]; empty: from the grid's load shape
    discomfort_usd_per_kwh2: float = 0.05  # w_FL
    wear_usd_per_kwh: float = 0.01  # w_BA


@dataclass(frozen=True)
class ProsumerProfile:
    """One prosumer over the whole period (arrays of hours; kW)."""

    name: str
    solar_kw: np.ndarray
    wind_kw: np.ndarray
    inflexible_kw: np.ndarray
    flexible_ref_kw: np.ndarray
    flexible_max_kw: float = 3.0
    battery_kwh: float = 10.0
    battery_kw: float = 5.0
    battery_eta: float = 0.95
    battery_initial_kwh: float = 5.0
    # the most its connection carries in an hour, and so the most it may trade with one peer
    # or in all (the VPP contract refuses trades beyond it)
    connection_kw: float = 20.0

    def validate(self, hours: int) -> ProsumerProfile:
        for name in ("solar_kw", "wind_kw", "inflexible_kw", "flexible_ref_kw"):
            arr = getattr(self, name)
            if arr.shape != (hours,):
                raise VppError(
                    f"prosumer {self.name}: {name} has {arr.shape[0]} hours, not {hours}"
                )
            if not np.all(np.isfinite(arr)) or arr.min() < 0:
                raise VppError(f"prosumer {self.name}: {name} must be finite and non-negative")
        if not 0 <= self.battery_initial_kwh <= self.battery_kwh:
            raise VppError(f"prosumer {self.name}: battery initial energy outside [0, capacity]")
        if not 0 < self.battery_eta <= 1:
            raise VppError(f"prosumer {self.name}: battery efficiency not in (0, 1]")
        if not 0 < self.connection_kw <= 1e6:
            raise VppError(f"prosumer {self.name}: connection_kw not in (0, 1e6]")
        if self.flexible_ref_kw.max(initial=0) > self.flexible_max_kw:
            raise VppError(f"prosumer {self.name}: preferred flexible load above its maximum")
        return self


def ancillary_price(hours: int) -> np.ndarray:
    """π_AS[t]: higher when the (forecast) grid load is high — evening peak."""
    t = np.arange(hours) % HOURS_PER_DAY
    return 0.01 + 0.02 * np.exp(-0.5 * ((t - 19) / 2.5) ** 2)


def generate_profiles(n_prosumers: int = 10, days: int = 7, seed: int = 3) -> list[ProsumerProfile]:
    """Seeded synthetic profiles (see module doc); deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    hours = days * HOURS_PER_DAY
    t = np.arange(hours) % HOURS_PER_DAY
    bell = np.clip(np.sin(np.pi * (t - 6) / 13), 0, None)  # sunrise 6:00, sunset 19:00
    cloud = np.repeat(rng.uniform(0.3, 1.0, days), HOURS_PER_DAY)
    base_shape = (
        0.35
        + 0.45 * np.exp(-0.5 * ((t - 7.5) / 1.2) ** 2)
        + 0.75 * np.exp(-0.5 * ((t - 19.5) / 2.0) ** 2)
    )
    out = []
    for u in range(n_prosumers):
        pv_kw = rng.choice([0.0, 3.0, 5.0, 8.0], p=[0.2, 0.3, 0.3, 0.2])
        solar = pv_kw * bell * cloud * rng.uniform(0.85, 1.0, hours)
        wind = np.zeros(hours)
        if rng.random() < 0.3:  # a small turbine
            speed = np.empty(hours)
            s = rng.uniform(3, 7)
            for h in range(hours):
                s = max(0.0, 0.9 * s + 0.1 * 5.5 + rng.normal(0, 0.8))
                speed[h] = s
            rated_kw, cut_in, rated = 3.0, 3.0, 12.0
            wind = rated_kw * np.clip((speed - cut_in) / (rated - cut_in), 0, 1) ** 3
        inflexible = rng.uniform(0.4, 1.2) * base_shape * rng.uniform(0.85, 1.15, hours)
        flexible = np.zeros(hours)
        for d in range(days):
            for cycle_kwh in (1.0, 1.5, 1.2):  # washer, dryer, dishwasher
                if rng.random() < 0.6:
                    start = d * HOURS_PER_DAY + int(rng.integers(17, 22))
                    flexible[start] += cycle_kwh / 2
                    flexible[start + 1] += cycle_kwh / 2
        battery_kwh = float(rng.choice([0.0, 5.0, 10.0, 13.5]))
        out.append(
            ProsumerProfile(
                name=f"prosumer-{u + 1}",
                solar_kw=solar,
                wind_kw=wind,
                inflexible_kw=inflexible,
                flexible_ref_kw=flexible,
                flexible_max_kw=max(3.0, float(flexible.max())),
                battery_kwh=battery_kwh,
                battery_kw=battery_kwh / 2.5,
                battery_initial_kwh=battery_kwh / 2,
            ).validate(hours)
        )
    return out


def load_profiles_csv(path: Path | str) -> list[ProsumerProfile]:
    """Read ``prosumer,hour,solar_kw,wind_kw,inflexible_kw,flexible_ref_kw`` rows (hours from 0,
    contiguous, the same count for every prosumer); batteries get the defaults."""
    rows: dict[str, dict[int, list[float]]] = {}
    cols = ["solar_kw", "wind_kw", "inflexible_kw", "flexible_ref_kw"]
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"prosumer", "hour", *cols} - set(reader.fieldnames or [])
        if missing:
            raise VppError(f"{path}: missing columns {sorted(missing)}")
        for line_no, row in enumerate(reader, start=2):
            try:
                values = [float(row[c]) for c in cols]
                hour = int(row["hour"])
            except ValueError as exc:
                raise VppError(f"{path} line {line_no}: {exc}") from exc
            rows.setdefault(row["prosumer"], {})[hour] = values
    if not rows:
        raise VppError(f"{path}: no rows")
    out = []
    hours = None
    for name, by_hour in rows.items():
        if sorted(by_hour) != list(range(len(by_hour))):
            raise VppError(f"{path}: prosumer {name} hours are not 0..{len(by_hour) - 1}")
        if hours is None:
            hours = len(by_hour)
        if len(by_hour) != hours or hours % HOURS_PER_DAY:
            raise VppError(f"{path}: prosumer {name} has {len(by_hour)} hours (whole days needed)")
        arr = np.array([by_hour[h] for h in range(hours)])
        flexible = arr[:, 3]
        out.append(
            ProsumerProfile(
                name, arr[:, 0], arr[:, 1], arr[:, 2], flexible,
                flexible_max_kw=max(3.0, float(flexible.max())),
            ).validate(hours)
        )  # fmt: skip
    return out


class Prosumer:
    """Seed 003 eq. 4 for one prosumer and one day (DPP: compiled once, re-solved)."""

    def __init__(self, index: int, n: int, prices: VppPrices, horizon: int = HOURS_PER_DAY) -> None:
        self.index, self.n, self.horizon = index, n, horizon
        h, others = horizon, n - 1
        self.r_max = cp.Parameter(h, nonneg=True)
        self.inflexible = cp.Parameter(h, nonneg=True)
        self.flex_ref = cp.Parameter(h, nonneg=True)
        self.b0 = cp.Parameter(nonneg=True)
        self.lin = cp.Parameter((others, h))  # ρ p'_uv + λ_uv
        self.rho = cp.Parameter(nonneg=True)
        self.cap = cp.Parameter(nonneg=True)
        self.power = cp.Parameter(nonneg=True)
        self.flex_max = cp.Parameter(nonneg=True)
        self.as_price = cp.Parameter(h, nonneg=True)
        self.g = cp.Variable(h, nonneg=True)
        self.r = cp.Variable(h, nonneg=True)
        self.flex = cp.Variable(h, nonneg=True)
        self.c = cp.Variable(h, nonneg=True)
        self.d = cp.Variable(h, nonneg=True)
        self.b = cp.Variable(h, nonneg=True)
        self.e_as = cp.Variable(h, nonneg=True)
        self.p = cp.Variable((others, h))  # p_uv, v over the others in index order
        self.peak = cp.Variable(nonneg=True)
        self.eta = cp.Parameter(nonneg=True)
        self.connection = cp.Parameter(nonneg=True)
        self.cost = (
            prices.grid_usd_per_kwh * cp.sum(self.g)
            + prices.peak_usd_per_kw_day * self.peak
            + prices.discomfort_usd_per_kwh2 * cp.sum_squares(self.flex - self.flex_ref)
            + prices.wear_usd_per_kwh * cp.sum(self.c + self.d)
            + prices.p2p_usd_per_kwh * cp.sum(self.p)
            - self.as_price @ self.e_as
        )
        cons = [
            self.flex + self.inflexible + self.c
            == self.r + self.g + self.d + cp.sum(self.p, axis=0),
            self.r <= self.r_max,
            self.g <= self.peak,
            self.b[0] == self.b0 + self.eta * (self.c[0] - self.d[0]),
            self.b[1:] == self.b[:-1] + self.eta * (self.c[1:] - self.d[1:]),
            self.b <= self.cap,
            self.b[h - 1] >= self.b0,  # no net discharge over the day (keeps days comparable)
            self.c <= self.power,
            self.d <= self.power,
            self.e_as <= self.b,
            self.flex <= self.flex_max,
            cp.sum(self.flex) == cp.sum(self.flex_ref),
            cp.abs(self.p) <= self.connection,
            cp.abs(cp.sum(self.p, axis=0)) <= self.connection,
        ]
        self.constraints = cons
        # ρ/2‖p' − p‖² − λ·p up to a constant, written DPP-style: ρ/2‖p‖² − (ρ p' + λ)·p
        penalty = self.rho / 2 * cp.sum_squares(self.p) - cp.sum(cp.multiply(self.lin, self.p))
        self.problem = cp.Problem(cp.Minimize(self.cost + penalty), cons)

    def set_day(self, profile: ProsumerProfile, day: int, b0: float, as_price: np.ndarray) -> None:
        s = slice(day * self.horizon, (day + 1) * self.horizon)
        self.r_max.value = profile.solar_kw[s] + profile.wind_kw[s]
        self.inflexible.value = profile.inflexible_kw[s]
        self.flex_ref.value = profile.flexible_ref_kw[s]
        self.b0.value = b0
        self.cap.value = profile.battery_kwh
        self.power.value = profile.battery_kw
        self.flex_max.value = profile.flexible_max_kw
        self.eta.value = profile.battery_eta
        self.as_price.value = as_price[s]
        # a hair inside the contract's bound, so a solution rounded to 1e-9 kWh stays within it
        self.connection.value = profile.connection_kw * (1 - 1e-6)

    def solve(self, p_aux: np.ndarray, lam: np.ndarray, rho: float) -> np.ndarray:
        self.lin.value, self.rho.value = rho * p_aux + lam, rho
        self.problem.solve(solver=cp.CLARABEL)
        if self.problem.status not in ("optimal", "optimal_inaccurate"):
            raise VppError(f"prosumer {self.index}: local problem {self.problem.status}")
        return np.asarray(self.p.value)


def _others(u: int, n: int) -> list[int]:
    return [v for v in range(n) if v != u]


def to_pair_matrix(per_prosumer: list[np.ndarray], n: int) -> np.ndarray:
    """Stack each prosumer's (n−1) × T trades into an n × n × T array (diagonal 0)."""
    horizon = per_prosumer[0].shape[1]
    out = np.zeros((n, n, horizon))
    for u in range(n):
        out[u, _others(u, n)] = per_prosumer[u]
    return out


@dataclass
class VppDayResult:
    day: int
    iterations: int
    residual_kwh: float
    cost_usd: float
    trades_kwh: np.ndarray  # n × n × T: what u bought from v (p'_uv, reciprocal)
    grid_kwh: np.ndarray  # n × T
    battery_end_kwh: np.ndarray  # n
    seconds: float
    duals_usd_per_kwh: np.ndarray | None = None  # n × n × T: λ at the end
    submitted_kwh: np.ndarray | None = None  # n × n × T: every prosumer's last p_uv


@dataclass
class VppResult:
    days: list[VppDayResult] = field(default_factory=list)

    def net_p2p_kwh(self) -> np.ndarray:
        """Per prosumer and hour of the period: bought (> 0) minus sold (< 0) — seed 003 Fig. 5."""
        return np.concatenate([d.trades_kwh.sum(axis=1) for d in self.days], axis=1)

    @property
    def cost_usd(self) -> float:
        return sum(d.cost_usd for d in self.days)


def solve_vpp_admm(
    profiles: list[ProsumerProfile],
    prices: VppPrices | None = None,
    rho: float = 0.5,
    eps_kwh: float = 1e-6,
    max_iter: int = 1000,
    step: DualStep = dual_step,
) -> VppResult:
    """Day by day (battery energy carried over): the prosumers' primal steps (eq. 4) and the
    dual step (eq. 5) — by default in floats; pass the contract's integer step to mirror it."""
    prices = prices or VppPrices()
    n = len(profiles)
    hours = profiles[0].solar_kw.shape[0]
    for profile in profiles:
        profile.validate(hours)
    as_price = (
        np.asarray(prices.ancillary_usd_per_kwh)
        if prices.ancillary_usd_per_kwh
        else ancillary_price(hours)
    )
    agents = [Prosumer(u, n, prices) for u in range(n)]
    b0 = np.array([p.battery_initial_kwh for p in profiles])
    result = VppResult()
    for day in range(hours // HOURS_PER_DAY):
        started = time.perf_counter()
        for u, agent in enumerate(agents):
            agent.set_day(profiles[u], day, float(b0[u]), as_price)
        aux = np.zeros((n, n, HOURS_PER_DAY))
        lam = np.zeros((n, n, HOURS_PER_DAY))
        residual = math.inf
        iterations = 0
        for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
            p = to_pair_matrix(
                [
                    agents[u].solve(aux[u, _others(u, n)], lam[u, _others(u, n)], rho)
                    for u in range(n)
                ],
                n,
            )
            aux, lam, residual = step(p, aux, lam, rho)
            if residual <= eps_kwh:
                break
        trades, last_p = aux, p
        cost = sum(float(a.cost.value) for a in agents)
        result.days.append(
            VppDayResult(
                day=day,
                iterations=iterations,
                residual_kwh=residual,
                cost_usd=cost,
                trades_kwh=trades,
                grid_kwh=np.array([a.g.value for a in agents]),
                battery_end_kwh=np.array([np.asarray(a.b.value)[-1] for a in agents]),
                seconds=time.perf_counter() - started,
                duals_usd_per_kwh=lam,
                submitted_kwh=last_p,
            )
        )
        b0 = np.clip(result.days[-1].battery_end_kwh, 0, [p.battery_kwh for p in profiles])
    return result


def solve_vpp_central_day(
    profiles: list[ProsumerProfile], day: int, b0: np.ndarray, prices: VppPrices | None = None
) -> float:
    """Eq. 3 for one day in one problem (reciprocity as a constraint): the reference cost."""
    prices = prices or VppPrices()
    n = len(profiles)
    hours = profiles[0].solar_kw.shape[0]
    as_price = (
        np.asarray(prices.ancillary_usd_per_kwh)
        if prices.ancillary_usd_per_kwh
        else ancillary_price(hours)
    )
    agents = [Prosumer(u, n, prices) for u in range(n)]
    cons = []
    for u, a in enumerate(agents):
        a.set_day(profiles[u], day, float(b0[u]), as_price)
        cons += a.constraints
    for u in range(n):
        for v in range(u + 1, n):
            pu = agents[u].p[_others(u, n).index(v)]
            pv = agents[v].p[_others(v, n).index(u)]
            cons.append(pu == -pv)
    problem = cp.Problem(cp.Minimize(sum(a.cost for a in agents)), cons)
    problem.solve(solver=cp.CLARABEL)
    if problem.status != "optimal":
        raise VppError(f"central VPP day {day}: {problem.status}")
    return float(problem.value)
