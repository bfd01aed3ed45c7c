"""A community of prosumers trading every 15 minutes on a real grid, on the embedded chain.

``gridledger community --grid GRID --prosumers N --hours H`` runs :func:`run_community`.  The
prosumers are the grid's loads with their PV (``demo/community_profiles.py``).  Each slot:

1. ten minutes before the slot, every prosumer posts one order for it with the strategy below
   (the prosumer agent's own code, ``agents/prosumer_agent.py``); the market contract matches;
2. the DSO certifies the slot's matches per interval with the DSO service's own classes
   (``agents/dso_service.py``'s :class:`IntervalDsoAgent` on the grid's ``GridEvaluator``),
   on the slot's operating point: every load and generator at its profile value;
3. once the slot has ended, each prosumer's meter posts the traded flow it measured (the meter
   service's :class:`ProfileMeter`): a seller's export and a buyer's import, each at most what
   it actually had (its generation minus its demand, or the reverse), so a forecast that was too
   high shows as an under-delivery; the settlement contract pays.

Strategy (zero-intelligence constrained, Gode and Sunder 1993): a prosumer forecasts its net
power with a uniform error of ±``forecast_error``; a surplus posts an offer for it priced
uniformly between the feed-in tariff and the retail price, a deficit a bid likewise (a trader
never sells below what the grid pays it nor buys above what the retailer charges).  What is
not traded peer to peer is bought from or sold to the retailer, off chain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gridledger.agents.dso_agent import Evaluation, GridPhase, _spec
from gridledger.agents.dso_config import DsoConfigError, GridEvaluator, dso_config_from_dict
from gridledger.agents.dso_service import IntervalDsoAgent
from gridledger.agents.meter_profile import ProfileMeter
from gridledger.agents.prosumer_agent import OrderSpec, ProsumerAgent
from gridledger.chain.contracts.market import ESCROW, PENDING, match_count, match_key
from gridledger.chain.contracts.market import NEXT_MATCH as NEXT_MATCH_KEY
from gridledger.chain.contracts.settlement import done_key
from gridledger.chain.contracts.tokens import DENOMS, balance_prefix, supply_key
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.community_profiles import SLOT_MS, SLOTS_PER_DAY, community_profiles
from gridledger.demo.localchain import LocalChain
from gridledger.grid.network import Network
from gridledger.market.orders import energy_wh

Progress = Callable[[str], None]
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
CHAIN_ID = "gridledger-community"
T0_MS = 1_813_536_000_000  # 2027-06-21T00:00Z: market time only; its shape is what matters
FUNDS_UTOKEN = 200_000_000  # 200 token per prosumer
MIN_ORDER_W = 10
MAX_PROSUMERS = 100_000
MAX_HOURS = 48
POST_BEFORE_MS = 600_000  # orders 10 minutes before their slot
MAX_DSO_ROUNDS = 64
MAX_VALIDATORS = 7
# on BFT validators the chain starts this long before the first orders are due: setup time
BFT_SETUP_MS = 1_200_000


class CommunityError(ValueError):
    """Bad input for a community run; the message names what is wrong."""


@dataclass(frozen=True)
class CommunityConfig:
    grid: str
    prosumers: int
    hours: float
    validators: int = 1
    seed: int = 0
    start_hour: int = 10
    feed_in_utoken_per_kwh: int = 80_000  # 0.08 token/kWh
    retail_utoken_per_kwh: int = 300_000  # 0.30 token/kWh
    forecast_error: float = 0.10
    regulators: int = 8
    speedup: float = 20.0  # simulated time per wall time on BFT validators (validators > 1)

    @property
    def slots(self) -> int:
        return round(self.hours * 4)

    def check(self) -> None:
        if not isinstance(self.prosumers, int) or not 1 <= self.prosumers <= MAX_PROSUMERS:
            raise CommunityError(
                f"--prosumers must be a whole number from 1 to {MAX_PROSUMERS}, "
                f"got {self.prosumers}"
            )
        if not (math.isfinite(self.hours) and 0.25 <= self.hours <= MAX_HOURS):
            raise CommunityError(f"--hours must be from 0.25 to {MAX_HOURS}, got {self.hours}")
        if abs(self.hours * 4 - round(self.hours * 4)) > 1e-9:
            raise CommunityError(f"--hours must be whole 15-minute slots, got {self.hours}")
        if not isinstance(self.validators, int) or not 1 <= self.validators <= MAX_VALIDATORS:
            raise CommunityError(
                f"--validators must be a whole number from 1 to {MAX_VALIDATORS} "
                f"(1: the embedded chain; more: BFT validator processes), got {self.validators}"
            )
        if not (math.isfinite(self.speedup) and 1 <= self.speedup <= 1000):
            raise CommunityError(f"--speedup must be from 1 to 1000, got {self.speedup}")
        if not 0 <= self.start_hour < 24:
            raise CommunityError(f"--start-hour must be 0..23, got {self.start_hour}")


@dataclass
class SlotEvaluator:
    """The DSO's evaluator on the slot's operating point: before the workflow superposes the
    slot's trades on the grid, every load and generator is set to its profile value minus the
    traded power it carries, so that with the trades added the grid is at its profile.  The
    physics is :class:`GridEvaluator`'s, unchanged; this only chooses the network it runs on."""

    inner: GridEvaluator
    operating_point: Callable[[int, list[Any]], Network]
    evaluations: dict[int, Evaluation] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)

    def initial_state(self) -> Any:
        return self.inner.initial_state()

    def dump_state(self, state: Any) -> Any:
        return self.inner.dump_state(state)

    def load_state(self, data: Any) -> Any:
        return self.inner.load_state(data)

    def rank(self, *args: Any) -> list[dict[str, Any]]:
        return self.inner.rank(*args)

    def overshoots(self, trades: list[Any], start_ms: int, state: Any) -> list[Any]:
        self.inner.net = self.operating_point(start_ms, list(trades))
        return self.inner.overshoots(trades, start_ms, state)

    def certify(self, trades, start_ms, slot_ms, previous, price, new_trade):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        self.inner.net = self.operating_point(start_ms, list(trades))
        out = self.inner.certify(trades, start_ms, slot_ms, previous, price, new_trade)
        self.evaluations[start_ms] = out[0]
        self.seconds[start_ms] = self.seconds.get(start_ms, 0.0) + time.perf_counter() - t0
        return out


@dataclass
class Prosumer:
    name: str
    key: KeyPair
    meter: ProfileMeter
    agent: ProsumerAgent
    bus: int


def run_community(cfg: CommunityConfig, home: Path, progress: Progress = lambda _: None) -> dict:
    """Run the community; return the report (see :func:`report_fields`)."""
    cfg.check()
    wall0 = time.perf_counter()
    timing = {"setup": 0.0, "orders_matching": 0.0, "certification": 0.0,
              "metering_settlement": 0.0, "blocks": 0.0, "report": 0.0}  # fmt: skip
    from gridledger.grid.cases import load_case

    try:
        base = load_case(cfg.grid)
    except (ValueError, ImportError) as exc:
        raise CommunityError(f"--grid {cfg.grid!r}: {exc}") from exc
    if base.load.empty:
        raise CommunityError(f"--grid {cfg.grid!r} has no loads, so no prosumers")
    first_slot = cfg.start_hour * 4
    prof = community_profiles(cfg.grid, base, cfg.prosumers, first_slot, cfg.slots)
    progress(
        f"{cfg.grid}: {len(base.bus)} buses, {len(base.load)} loads; {cfg.prosumers} prosumers "
        f"({prof.source})"
    )
    rng = np.random.default_rng(cfg.seed)
    validator, dso = KeyPair.generate(), KeyPair.generate()
    keys = [KeyPair.generate() for _ in range(cfg.prosumers)]
    meter_keys = [KeyPair.generate() for _ in range(cfg.prosumers)]
    start_ms = T0_MS + first_slot * SLOT_MS
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"}] + [
        {"pub_key": k.pub_hex, "role": "prosumer", "name": f"p{i}", "bus": int(prof.bus[i])}
        for i, k in enumerate(keys)
    ]
    balances = [{"account": k.pub_hex, "denom": "utoken", "amount": FUNDS_UTOKEN} for k in keys]
    home.mkdir(parents=True, exist_ok=True)
    chain: Any
    if cfg.validators == 1:
        genesis = make_genesis(
            CHAIN_ID, start_ms - 3_600_000, [(validator.pub_hex, 1)], members, balances, CONTRACTS
        )
        chain = LocalChain(home, genesis, validator, start_ms - 3_600_000)
    else:
        from gridledger.demo.community_bft import BftCommunityChain

        genesis_ms = start_ms - POST_BEFORE_MS - BFT_SETUP_MS
        chain = BftCommunityChain(home, cfg.validators, CHAIN_ID, genesis_ms, cfg.speedup,
                                  members, balances, CONTRACTS)  # fmt: skip
    try:
        return _run(cfg, home, progress, wall0, timing, base, prof, rng, chain, dso, keys,
                    meter_keys, start_ms)  # fmt: skip
    finally:
        if cfg.validators > 1:
            chain.close()


def _run(cfg, home, progress, wall0, timing, base, prof, rng, chain, dso, keys, meter_keys,  # type: ignore[no-untyped-def]
         start_ms):  # fmt: skip
    def drain() -> None:
        t = time.perf_counter()
        if isinstance(chain, LocalChain):
            chain.produce(chain.now_ms + 1000)
            while len(chain.mempool):
                chain.produce(chain.now_ms + 1000)
        else:
            chain.drain()
        timing["blocks"] += time.perf_counter() - t

    for k, mk in zip(keys, meter_keys, strict=True):
        chain.submit(dso, "member.bind_meter", {"meter": mk.pub_hex, "prosumer": k.pub_hex})
    drain()

    # the DSO: regulators are the first prosumers' PV inverters (paid to their owners)
    regulators: dict[str, str] = {}
    seen_bus: set[int] = set()
    for i, g in enumerate(prof.gen_name):
        if g and g not in regulators and int(prof.bus[i]) not in seen_bus:
            regulators[g] = keys[i].pub_hex
            seen_bus.add(int(prof.bus[i]))
        if len(regulators) >= cfg.regulators:
            break
    if not regulators:
        raise CommunityError(f"--grid {cfg.grid!r}: no prosumer has a generator to regulate")
    try:
        inner, accounts = dso_config_from_dict(
            {"method": "exact", "regulators": regulators}, cfg.grid, "community DSO"
        )
    except DsoConfigError as exc:
        raise CommunityError(str(exc)) from exc
    op = _OperatingPoints(
        base,
        prof,
        start_ms,
        lambda s: [_spec(chain.state(match_key(m))["match"]) for m in _slot_match_ids(chain, s)],
    )
    evaluator = SlotEvaluator(inner, op.at)
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT_MS, None)
    agent.warm_up()
    prosumers = [
        Prosumer(
            f"p{i}",
            k,
            ProfileMeter(f"m{i}", meter_keys[i], [], [], SLOT_MS),
            ProsumerAgent(f"p{i}", k, int(prof.bus[i]), []),
            int(prof.bus[i]),
        )
        for i, k in enumerate(keys)
    ]
    timing["setup"] = time.perf_counter() - wall0
    progress(f"chain at {home}; {len(regulators)} regulators; {cfg.slots} slots")

    slot_rows: list[dict[str, Any]] = []
    ordered: dict[int, list[tuple[int, str, int]]] = {}  # slot -> (prosumer, kind, power_w)
    order_refusals: dict[int, dict[str, int]] = {}  # slot -> the node's reason -> orders
    for k in range(cfg.slots + 1):
        s_k = start_ms + k * SLOT_MS
        if k < cfg.slots:
            t = time.perf_counter()
            chain.produce(s_k - POST_BEFORE_MS)
            order_refusals[k] = {}
            ordered[k] = _post_orders(cfg, prof, prosumers, chain, k, s_k, rng, order_refusals[k])
            timing["orders_matching"] += time.perf_counter() - t
            drain()
            t = time.perf_counter()
            for _ in range(MAX_DSO_ROUNDS):
                if not (chain.state(PENDING) or []):
                    break
                agent.step(chain)
                drain()
            timing["certification"] += time.perf_counter() - t
        if k > 0:
            t = time.perf_counter()
            chain.produce(s_k)
            _post_readings(prof, prosumers, chain, ordered[k - 1], k - 1, s_k - SLOT_MS)
            drain()
            timing["metering_settlement"] += time.perf_counter() - t
            slot_rows.append(_slot_row(chain, prof, op, evaluator, k - 1, s_k - SLOT_MS))
            slot_rows[-1]["orders_refused"] = order_refusals[k - 1]
            r = slot_rows[-1]
            progress(
                f"[{time.perf_counter() - wall0:6.0f} s] "
                f"slot {r['slot']:>3} {r['time']}: {r['trades']:>4} trades, "
                f"{r['p2p_kwh']:8.2f} kWh P2P, {r['grid_kwh']:8.2f} kWh from the grid, "
                f"refused {sum(r['refusals'].values())}"
            )
    t = time.perf_counter()
    chain_home = home
    extra: dict[str, Any] = {}
    if not isinstance(chain, LocalChain):  # the validators agree, then node 0's copy is checked
        agreement = chain.agreement()
        extra["validators"] = {"count": cfg.validators, "speedup": cfg.speedup, **agreement}
        chain_home = chain.node0_home
        chain = chain.stop_and_open_node0()
    invariants, details = check_invariants(chain, [p.key.pub_hex for p in prosumers], dso)
    if extra:
        invariants["validators_same_app_hash"] = extra["validators"]["same_app_hash"]
    timing["report"] = time.perf_counter() - t
    wall = time.perf_counter() - wall0
    chain_bytes = sum(f.stat().st_size for f in (chain_home / "data").glob("chain.db*"))
    return {
        **extra,
        "grid": cfg.grid,
        "prosumers": cfg.prosumers,
        "buses": len(base.bus),
        "slots": cfg.slots,
        "wall_s": round(wall, 3),
        "realtime_factor": round(cfg.slots * SLOT_MS / 1000 / wall, 2),
        "invariants": invariants,
        "invariant_details": details,
        "per_slot": slot_rows,
        "dso_interval_s": [round(x, 4) for x in evaluator.seconds.values()],
        "time_s": {k: round(v, 3) for k, v in timing.items()},
        "chain_bytes": chain_bytes,
        "chain_bytes_per_prosumer_day": round(
            chain_bytes / cfg.prosumers / (cfg.slots / SLOTS_PER_DAY)
        ),
        "height": details["height"],
        "strategy": (
            "zero-intelligence constrained: offers and bids priced uniformly in "
            f"[{cfg.feed_in_utoken_per_kwh / 1e6:g}, {cfg.retail_utoken_per_kwh / 1e6:g}] "
            f"token/kWh; forecast error ±{100 * cfg.forecast_error:g} %"
        ),
        "profiles": prof.source,
        "home": str(chain_home),
    }


class _OperatingPoints:
    """The network at a slot's profile values, minus the power of every trade matched in the
    slot (on the element the DSO's workflow adds them to: the first generator at the seller's
    bus, the first load at the buyer's).  With the approved trades superposed by the workflow
    the grid is at its profile; a refused trade is not delivered (its seller does not inject
    it, its buyer does not draw it), so refusing a trade changes the physics the DSO checks."""

    def __init__(
        self,
        base: Network,
        prof: Any,
        start_ms: int,
        matched: Callable[[int], list[Any]] = lambda _s: [],
    ) -> None:
        self.base, self.prof, self.start_ms = base, prof, start_ms
        self.matched = matched  # slot start -> every match made for it (TradeSpec)
        self.p0 = base.load.p_mw.to_numpy()
        self.pf = np.where(self.p0 > 0, base.load.q_mvar.to_numpy() / np.maximum(self.p0, 1e-12), 0)
        self.gen_bus = base.gen.bus.to_numpy().astype(int)
        self.load_bus = base.load.bus.to_numpy().astype(int)

    def at(self, t_ms: int, trades: list[Any]) -> Network:
        # clamped: the DSO's warm-up solves the grid once at time 0
        k = min(max((t_ms - self.start_ms) // SLOT_MS, 0), self.prof.grid_load_mw.shape[1] - 1)
        load_p = self.prof.grid_load_mw[:, k].copy()
        gen_p = self.prof.grid_gen_mw[:, k].copy()
        slack = self.base.gen.role.to_numpy() == "slack"
        gen_p[slack] = self.base.gen.p_mw.to_numpy()[slack]
        s = self.start_ms + k * SLOT_MS
        every = {tr.trade_id: tr for tr in [*self.matched(s), *trades]}
        for tr in every.values():
            mw = tr.power_kw / 1000
            g = np.flatnonzero(self.gen_bus == tr.seller_bus)
            if g.size:
                gen_p[g[0]] -= mw
            j = np.flatnonzero(self.load_bus == tr.buyer_bus)
            if j.size:
                load_p[j[0]] -= mw
        load = self.base.load.copy()
        load["p_mw"] = load_p
        load["q_mvar"] = load_p * self.pf
        gen = self.base.gen.copy()
        gen["p_mw"] = gen_p
        return self.base.with_tables(gen=gen, load=load)


def _post_orders(
    cfg: CommunityConfig,
    prof: Any,
    prosumers: list[Prosumer],
    chain: LocalChain,
    k: int,
    s_k: int,
    rng: np.random.Generator,
    refusals: dict[str, int],
) -> list[tuple[int, str, int]]:
    net_kw = prof.pv_kw[:, k] - prof.load_kw[:, k]
    forecast = net_kw * (1 + rng.uniform(-cfg.forecast_error, cfg.forecast_error, len(net_kw)))
    prices = rng.integers(cfg.feed_in_utoken_per_kwh, cfg.retail_utoken_per_kwh + 1, len(net_kw))
    out = []
    for i, p in enumerate(prosumers):
        w = round(abs(forecast[i]) * 1000)
        if w < MIN_ORDER_W:
            continue
        kind = "offer" if forecast[i] > 0 and prof.gen_name[i] else "bid"
        if kind == "bid" and forecast[i] > 0:
            continue  # a surplus without a generator to certify it: sold to the retailer
        spec = OrderSpec(kind, w, int(prices[i]), s_k, s_k + SLOT_MS, post_at_ms=0,
                         label=f"slot {k}")  # fmt: skip
        p.agent.profile.append(spec)
        p.agent.step(chain)
        refused = p.agent.refused.get(len(p.agent.profile) - 1)
        if refused is None:
            out.append((i, kind, w))
        else:  # e.g. a bid above the prosumer's balance: counted in the slot's row
            why = _order_refusal_kind(refused)
            refusals[why] = refusals.get(why, 0) + 1
    return out


def _order_refusal_kind(text: str) -> str:
    low = text.lower()
    kinds = (("escrow", "insufficient funds"), ("open orders", "open-order cap"),
             ("horizon", "horizon"), ("max_window_slots", "window length"))  # fmt: skip
    for needle, kind in kinds:
        if needle in low:
            return kind
    return "other"


def _post_readings(
    prof: Any,
    prosumers: list[Prosumer],
    chain: LocalChain,
    ordered: list[tuple[int, str, int]],
    k: int,
    slot_start: int,
) -> None:
    """Each prosumer that ordered posts its trade meter's reading: the approved schedule, capped
    by what it really had to sell or needed to buy (net of its own demand or generation)."""
    from gridledger.chain.contracts.market import slot_matches_key

    # the slot's approved schedule per party, read once (agents/meter_sim.py's scheduled_wh
    # reads it per prosumer, which is quadratic in a community)
    export: dict[str, int] = {}
    import_: dict[str, int] = {}
    for mid in chain.state(slot_matches_key(slot_start)) or []:
        rec = chain.state(match_key(mid))
        if rec["status"] not in ("approved", "settled"):
            continue
        m = rec["match"]
        e = energy_wh(m["power_w"], SLOT_MS)
        export[m["seller"]] = export.get(m["seller"], 0) + e
        import_[m["buyer"]] = import_.get(m["buyer"], 0) + e
    for i, kind, _ in ordered:
        p = prosumers[i]
        exp, imp = export.get(p.key.pub_hex, 0), import_.get(p.key.pub_hex, 0)
        actual_wh = (prof.pv_kw[i, k] - prof.load_kw[i, k]) * 1000 * SLOT_MS / 3_600_000
        if kind == "offer":
            kwh = -min(exp, max(actual_wh, 0.0)) / 1000
        else:
            kwh = min(imp, max(-actual_wh, 0.0)) / 1000
        p.meter.starts_ms.append(slot_start)
        p.meter.kwh.append(kwh)
        p.meter.step(chain)


_REFUSAL_KINDS = (
    ("voltage", "voltage"),
    ("loading", "line loading"),
    ("line", "line loading"),
    ("capab", "generator capability"),
    ("no generation", "no generation at seller"),
    ("before its delivery", "late"),
    ("escrow", "buyer funds"),
    ("loss share", "loss share cap"),
    ("converge", "power flow"),
)


def refusal_kind(reason: str) -> str:
    """The limit a refusal reason names, in a few words (for the per-slot counts)."""
    low = reason.lower()
    for needle, kind in _REFUSAL_KINDS:
        if needle in low:
            return kind
    return "other"


def _slot_row(
    chain: LocalChain, prof: Any, op: _OperatingPoints, ev: SlotEvaluator, k: int, s: int
) -> dict[str, Any]:
    from gridledger.chain.contracts.market import slot_matches_key

    approved = chain.state(slot_matches_key(s)) or []
    p2p_wh = 0
    flows = {"energy": 0, "loss": 0, "reactive": 0, "penalty": 0, "shortfall": 0}
    for mid in approved:
        done = chain.state(done_key(mid, s))
        if done is None:
            continue
        p2p_wh += done["delivered_wh"]
        for pay in done["payments"]:
            flows[pay["kind"]] = flows.get(pay["kind"], 0) + pay["amount"]
            flows["shortfall"] += pay["shortfall"]
    refusals: dict[str, int] = {}
    for mid in _slot_match_ids(chain, s):
        rec = chain.state(match_key(mid))
        if rec["status"] == "rejected":
            kind = refusal_kind("; ".join(rec["reasons"]))
            refusals[kind] = refusals.get(kind, 0) + 1
    demand_kwh = float(
        np.clip(prof.load_kw[:, k] - prof.pv_kw[:, k], 0, None).sum() * SLOT_MS / 3_600_000
    )
    e = ev.evaluations.get(s)
    if e is not None and e.document:
        vm = [v for v in e.document.get("bus_vm_pu", {}).values() if v is not None]
        loading = e.document.get("line_loading_pct", {}) or {}
        loss_y, loss_n = e.loss_kw, e.loss_kw_without_ropf
    else:
        from gridledger.grid.powerflow import run_pf

        pf = run_pf(op.at(s, []), check=False)
        vm = list(pf.vm_pu) if pf.converged else []
        names = [str(n) for n in op.base.branch["name"]]
        loading = {n: float(x) for n, x, r in zip(names, pf.loading_pct, pf.rated, strict=True)
                   if r}  # fmt: skip
        loss_y = loss_n = pf.loss_mw * 1000 if pf.converged else math.nan
    worst = max(loading.items(), key=lambda x: x[1]) if loading else ("", math.nan)
    return {
        "slot": k,
        "time": time.strftime("%H:%M", time.gmtime(s / 1000)),
        "trades": len(approved),
        "p2p_kwh": round(p2p_wh / 1000, 3),
        "grid_kwh": round(max(demand_kwh - p2p_wh / 1000, 0.0), 3),
        "loss_kw_before_ropf": _r(loss_n),
        "loss_kw_after_ropf": _r(loss_y),
        "vm_min_pu": _r(min(vm), 5) if vm else None,
        "vm_max_pu": _r(max(vm), 5) if vm else None,
        "most_loaded_line": worst[0],
        "most_loaded_pct": _r(worst[1], 2),
        "refusals": refusals,
        "token_flows_utoken": flows,
    }


def _r(x: float, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _slot_match_ids(chain: LocalChain, s: int) -> list[str]:
    """Every match (approved, settled or rejected) delivering in the slot starting at ``s``."""
    from gridledger.chain.contracts.market import match_id

    cache = getattr(chain, "_community_by_slot", None)
    if cache is None:
        cache = {"n": 0, "by_slot": {}}
        chain._community_by_slot = cache  # type: ignore[attr-defined]
    n = match_count(chain.state(NEXT_MATCH_KEY))
    for i in range(cache["n"], n):
        mid = match_id(i)
        start = chain.state(match_key(mid))["match"]["start_ms"]
        cache["by_slot"].setdefault(start, []).append(mid)
    cache["n"] = n
    return cache["by_slot"].get(s, [])


def check_invariants(
    chain: LocalChain, prosumers: list[str], dso: KeyPair
) -> tuple[dict[str, bool], dict[str, Any]]:
    """The run's invariants, read from the committed state (and ``verify`` replaying the
    chain from genesis)."""
    from gridledger.chain.verify import verify_chain

    supply_ok, negative, details = True, [], {}
    for denom in DENOMS:
        bal = {k: chain.state_int(k) for k in chain.keys_with_prefix(balance_prefix(denom))}
        supply = chain.state_int(supply_key(denom))
        details[f"supply_{denom}"] = supply
        details[f"sum_balances_{denom}"] = sum(bal.values())
        supply_ok &= supply == sum(bal.values())
        negative += [k for k, v in bal.items() if v < 0]
    escrow_left = chain.balance("utoken", ESCROW)
    bids_left = [
        k for k in chain.keys_with_prefix("market/bid/") if chain.state(k)["escrow_utoken"] != 0
    ]
    n = match_count(chain.state(NEXT_MATCH_KEY))
    unresolved, unexplained, extras_left = [], [], []
    from gridledger.chain.contracts.market import match_id

    for i in range(n):
        rec = chain.state(match_key(match_id(i)))
        if rec["status"] not in ("settled", "rejected"):
            unresolved.append(match_id(i))
        if rec["status"] == "rejected" and not rec["reasons"]:
            unexplained.append(match_id(i))
        if rec.get("extras_escrow_utoken", 0):
            extras_left.append(match_id(i))
    height = chain.height()
    pending = chain.state(PENDING) or []
    chain.close()
    rep = verify_chain(chain.home / "data" / "chain.db")
    details.update(
        {
            "escrow_utoken": escrow_left,
            "bids_with_escrow": len(bids_left),
            "matches_with_extras": len(extras_left),
            "matches": n,
            "unresolved_matches": unresolved[:10],
            "rejected_without_reason": unexplained[:10],
            "negative_balances": negative[:10],
            "verify": rep.to_json(),
            "height": height,
        }
    )
    invariants = {
        "supply_equals_sum_of_balances": supply_ok,
        "no_negative_balance": not negative,
        "escrow_returned_or_spent": escrow_left == 0 and not bids_left and not extras_left,
        "every_match_certified_or_refused_with_reason": not unresolved
        and not unexplained
        and not pending,
        "verify_passes": rep.ok,
    }
    return invariants, details
