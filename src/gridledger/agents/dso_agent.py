"""DSO agent: follows the chain, certifies each pending match, re-issues loss shares.

For a pending match the agent takes the trades that run in the match's window (approved on
chain, seed 000 Fig. 3), and for every instant in that window where the set of running trades
or the power of one of them changes (a trade with a power profile changes power at slot
boundaries; each trade enters the power flow with its power in that slot, and a trade at zero
power in a slot is left out of it and has a zero loss share) it evaluates the operating point
with all of them superposed (seed 000 §II.B steps 1–8: other generators fixed, trades added
to seller generation and buyer load, R-OPF, losses of every trade by the Global method,
change of total losses, reactive set-points).  Then it posts, in one block:

1. ``market.losses`` for each such instant (loss tree): the shares of every running trade,
   re-issued because the new trade changes them;
2. ``market.reactive`` (reactive tree): the regulator nodes' set-points at the match's start,
   their ΔQ against the previous interval, ΔPQ (seed 000 eq. 7) and remuneration per slot
   (eq. 8), and the tap changers' positions when the DSO moves taps;
3. ``market.certificate`` (active tree): approved, or rejected with the violated limits as
   reasons, bound to the match's digest and to the digest of the full off-chain document.

The physics is behind :class:`Evaluator` (``gridledger.market.certificate``'s workflow); the
agent itself does chain bookkeeping only.  Set-points and losses go on chain as integers
(W, var), rounded to the nearest unit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gridledger.agents.client import AgentError, ChainClient, must
from gridledger.chain.contracts.market import (
    MAX_LOSS_SHARE_PPM,
    PARAMS,
    PENDING,
    RANKING,
    buyer_extras_utoken,
    default_params,
    document_digest,
    loss_cap_w,
    match_key,
    reactive_digest,
    slot_matches_key,
    taps_record,
    trade_record,
)
from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.keys import KeyPair
from gridledger.market.orders import power_at

# loss shares per market.losses record: well inside its 256-row and 16 KiB payload bounds
LOSS_SHARES_PER_TX = 128


@dataclass(frozen=True)
class TradeSpec:
    trade_id: str
    seller_bus: int
    buyer_bus: int
    power_kw: float


@dataclass(frozen=True)
class RegulatorOut:
    """One regulator node in one interval: its set-point, ΔQ, ΔPQ and pay for one slot."""

    bus: int
    q_kvar: float
    delta_q_kvar: float
    delta_pq_kw: float
    utoken_per_slot: int


@dataclass
class Evaluation:
    """One interval's operating point with every running trade superposed."""

    feasible: bool
    reasons: list[str]
    loss_kw: float  # total active losses with R-OPF
    loss_kw_without_ropf: float
    share_kw: dict[str, float]  # Global-method loss share per trade, with R-OPF
    share_kw_without_ropf: dict[str, float]
    regulators: list[RegulatorOut]
    document: dict[str, Any] = field(default_factory=dict)
    taps: dict[str, int] = field(default_factory=dict)  # moved tap changers: branch -> position


class Evaluator(Protocol):
    """The DSO's physics (see agents/evaluator.py)."""

    def initial_state(self) -> Any:
        """Reactive set-points before the first interval."""
        ...

    def certify(
        self,
        trades: Sequence[TradeSpec],
        start_ms: int,
        slot_ms: int,
        previous: Any,
        price_utoken_per_kwh: int,
        new_trade: str | None,
    ) -> tuple[Evaluation, Any]:
        """Steps 2–8 for the interval starting at ``start_ms``; returns the evaluation and the
        optimized set-points (the next interval's "previous")."""
        ...

    def overshoots(self, trades: Sequence[TradeSpec], start_ms: int, state: Any) -> list[Any]:
        """The limits the trades break at the optimized ``state``, each with every trade's
        contribution (``market.culprits.Overshoot``), for the DSO's refusal rule."""
        ...

    def dump_state(self, state: Any) -> Any:
        """The state as JSON-able data (the agent keeps it on disk across restarts)."""
        ...

    def load_state(self, data: Any) -> Any: ...

    def rank(
        self,
        buyer_bus: int,
        power_kw: float,
        sellers: Sequence[int],
        running: Sequence[TradeSpec],
        previous: Any,
    ) -> list[dict[str, Any]]:
        """Seed 002 Table 5 rows for one buyer, in the chain's integer form."""
        ...


@dataclass
class RankingSpec:
    """A seller ranking request (seed 002 Table 5) the DSO answers at ``post_at_ms``, with the
    trades approved on chain that run at ``at_ms``."""

    post_at_ms: int
    at_ms: int
    buyer_bus: int
    power_kw: float
    sellers: tuple[int, ...]
    posted: bool = False


@dataclass
class GridPhase:
    """The grid in force from ``from_ms`` on (e.g. islanding switches the model) and the member
    paid for reactive support at each regulator bus."""

    from_ms: int
    evaluator: Evaluator
    regulator_accounts: dict[int, str]
    states: dict[int, Any] = field(default_factory=dict)  # interval start -> optimized state

    def previous(self, t_ms: int) -> Any:
        """The optimized state of the latest evaluated interval before ``t_ms``."""
        before = [t for t in self.states if t < t_ms]
        return self.states[max(before)] if before else self.evaluator.initial_state()


@dataclass
class DsoAgent:
    key: KeyPair
    phases: list[GridPhase]
    slot_ms: int = 900_000
    documents_dir: Path | None = None
    rankings: list[RankingSpec] = field(default_factory=list)
    handled: dict[str, str] = field(default_factory=dict)  # match id -> verdict
    log: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._load_states()

    @property
    def _state_file(self) -> Path | None:
        return None if self.documents_dir is None else self.documents_dir / "setpoints.json"

    def _save_states(self) -> None:
        """The optimized set-points per interval, so that a restarted agent computes ΔQ against
        the right previous interval (the DSO's own off-chain record)."""
        path = self._state_file
        if path is None:
            return
        data = {
            str(ph.from_ms): {str(t): ph.evaluator.dump_state(st) for t, st in ph.states.items()}
            for ph in self.phases
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)  # atomic: a crash leaves the old file or the new one

    def _load_states(self) -> None:
        path = self._state_file
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        for ph in self.phases:
            for t, st in data.get(str(ph.from_ms), {}).items():
                ph.states[int(t)] = ph.evaluator.load_state(st)

    def phase_at(self, time_ms: int) -> GridPhase:
        current = None
        for ph in sorted(self.phases, key=lambda x: x.from_ms):
            if ph.from_ms <= time_ms:
                current = ph
        if current is None:
            raise ValueError(f"no grid model in force at {time_ms}")
        return current

    def step(self, client: ChainClient) -> int:
        """Answer due ranking requests and certify the first pending match; return txs posted."""
        posted = 0
        now = client.time_ms()
        for r in self.rankings:
            if not r.posted and r.post_at_ms <= now:
                self.publish_ranking(client, r)
                posted += 1
        for mid in client.state(PENDING) or []:
            if mid in self.handled:
                continue
            posted += self.certify(client, mid)
            break  # one per block: the next sees this one's approval on chain
        return posted

    def _approved_at(self, client: ChainClient, t_ms: int) -> list[dict[str, Any]]:
        slot_start = t_ms - t_ms % self.slot_ms
        out = []
        for mid in client.state(slot_matches_key(slot_start)) or []:
            rec = client.state(match_key(mid))
            if rec["status"] in ("approved", "settled"):
                out.append(rec["match"])
        return out

    def publish_ranking(self, client: ChainClient, r: RankingSpec) -> None:
        phase = self.phase_at(r.at_ms)
        running = _specs(self._approved_at(client, r.at_ms), r.at_ms, self.slot_ms)
        rows = phase.evaluator.rank(
            r.buyer_bus, r.power_kw, r.sellers, running, phase.previous(r.at_ms)
        )
        # one ranking record on chain: keep the other buyers' rows, replace this buyer's
        kept = [x for x in client.state(RANKING) or [] if x["buyer_node"] != r.buyer_bus]
        must(
            client.submit(self.key, "market.ranking", {"rows": kept + rows}),
            f"seller ranking for bus {r.buyer_bus}",
        )
        r.posted = True
        self.log.append({"ranking": r.buyer_bus, "rows": rows})

    # -- one certificate ---------------------------------------------------------------------

    def _running(self, client: ChainClient, m: dict[str, Any]) -> list[dict[str, Any]]:
        """Approved matches overlapping the new match's window (from the chain's slot index)."""
        seen: dict[str, dict[str, Any]] = {}
        for s in range(m["start_ms"], m["end_ms"], self.slot_ms):
            for mid in client.state(slot_matches_key(s)) or []:
                if mid not in seen:
                    rec = client.state(match_key(mid))
                    if rec["status"] in ("approved", "settled"):
                        seen[mid] = rec["match"]
        return list(seen.values())

    def certify(self, client: ChainClient, mid: str) -> int:
        rec = client.state(match_key(mid))
        m = rec["match"]
        phase = self.phase_at(m["start_ms"])
        ev = phase.evaluator
        others = self._running(client, m)
        everyone = [*others, m]
        instants = {m["start_ms"]}
        last_end = max(x["end_ms"] for x in everyone)
        for x in others:
            for t in (x["start_ms"], x["end_ms"]):
                if m["start_ms"] < t <= m["end_ms"] and t < last_end:
                    instants.add(t)
        instants |= power_changes(everyone, m["start_ms"], m["end_ms"], self.slot_ms)
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]] = {}
        new_states = {}
        for t in sorted(instants):
            running = [x for x in everyone if x["start_ms"] <= t < x["end_ms"]]
            prev = new_states[max(new_states)] if new_states else phase.previous(t)
            evaluation, state = ev.certify(
                _specs(running, t, self.slot_ms),
                t,
                self.slot_ms,
                prev,
                m["price_utoken_per_kwh"],
                mid if t == m["start_ms"] else None,
            )
            evaluations[t] = (running, evaluation)
            new_states[t] = state
        reasons = [r for _, e in evaluations.values() for r in e.reasons]
        feasible = all(e.feasible for _, e in evaluations.values())
        start_eval = evaluations[m["start_ms"]][1]
        document = {
            "match": m,
            "match_digest": rec["digest"],
            "feasible": feasible,
            "reasons": reasons,
            "intervals": [
                {"from_ms": t, "trades": [x["match_id"] for x in run], "evaluation": e.document}
                for t, (run, e) in sorted(evaluations.items())
            ],
        }
        digest = document_digest(document)
        if self.documents_dir is not None:
            self.documents_dir.mkdir(parents=True, exist_ok=True)
            (self.documents_dir / f"{mid}.json").write_text(json.dumps(document, indent=1))
        if feasible and client.time_ms() >= m["start_ms"]:
            feasible = False
            reasons = ["the DSO could not certify the trade before its delivery started"]
        n = 0
        if feasible:
            try:
                n = self._post_approval(client, mid, rec, phase, evaluations, start_eval, digest)
                phase.states.update(new_states)
                self._save_states()
            except AgentError as exc:
                # late or refused: the match must not hang pending, so it is rejected
                feasible, reasons = False, [f"the DSO could not certify the trade: {exc}"[:200]]
        if not feasible:
            must(
                client.submit(
                    self.key,
                    "market.certificate",
                    {
                        "match_id": mid,
                        "match_digest": rec["digest"],
                        "document_digest": digest,
                        "verdict": "rejected",
                        "reasons": [r[:200] for r in reasons[:16]],
                    },
                ),
                f"certificate for {mid}",
            )
            n += 1
        self.handled[mid] = "approved" if feasible else "rejected"
        self.log.append(
            {
                "match": mid,
                "verdict": self.handled[mid],
                "reasons": reasons,
                "document_digest": digest,
                "taps": dict(start_eval.taps) if feasible else {},
            }
        )
        return n

    def _post_approval(
        self,
        client: ChainClient,
        mid: str,
        rec: dict[str, Any],
        phase: GridPhase,
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
        start_eval: Evaluation,
        digest: str,
    ) -> int:
        """Loss shares (one record per instant), set-points, then the approval.  What the
        contract would refuse in the block (a loss share above the cap, a buyer who cannot
        escrow the extras) is checked first and raised, so the match is rejected, not left
        pending by an approval that fails after it was accepted."""
        setpoints = [
            {
                "account": phase.regulator_accounts[r.bus],
                "node": r.bus,
                "q_var": round(1000 * r.q_kvar),
                "delta_q_var": round(1000 * r.delta_q_kvar),
                "delta_pq_w": round(1000 * r.delta_pq_kw),
                "utoken_per_slot": r.utoken_per_slot,
            }
            for r in start_eval.regulators
            if r.bus in phase.regulator_accounts
        ]
        for t, (run, e) in sorted(evaluations.items()):
            for x in run:
                cap = loss_cap_w(x, power_at(x, t, self.slot_ms))
                if round(1000 * e.share_kw.get(x["match_id"], 0.0)) > cap:
                    raise AgentError(
                        f"the loss share of {x['match_id']} would exceed "
                        f"{MAX_LOSS_SHARE_PPM // 10_000} % of its power"
                    )
        m = rec["match"]
        extras = buyer_extras_utoken(m, setpoints, client.state(PARAMS) or default_params())
        if int(client.state(balance_key("utoken", m["buyer"])) or 0) < extras:
            raise AgentError(f"the buyer cannot escrow {extras} utoken for reactive pay and losses")
        n = self.post_loss_shares(client, evaluations)
        taps = taps_record(start_eval.taps) if start_eval.taps else None
        must(
            client.submit(self.key, "market.reactive", reactive_payload(mid, setpoints, taps)),
            f"reactive set-points for {mid}",
        )
        cert = {
            "match_id": mid,
            "match_digest": rec["digest"],
            "document_digest": digest,
            "verdict": "approved",
            "reasons": [],
            "trade": trade_record(rec["match"], self.slot_ms),
            "reactive_digest": reactive_digest(setpoints, taps),
        }
        must(client.submit(self.key, "market.certificate", cert), f"certificate for {mid}")
        return n + 2

    def warm_up(self) -> None:
        """Load and solve each grid once, so that a cold process's first certificate is not late
        (imports and first solves take seconds on a busy machine)."""
        for ph in self.phases:
            ph.evaluator.certify([], 0, self.slot_ms, ph.evaluator.initial_state(), 0, None)

    def post_loss_shares(
        self,
        client: ChainClient,
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
    ) -> int:
        """One ``market.losses`` record per instant where the running trades change: every
        running trade's share with and without the R-OPF, in W. Returns how many it posted."""
        n = 0
        for t, (run, e) in sorted(evaluations.items()):
            shares = [
                {
                    "match_id": x["match_id"],
                    # a trade at zero power in this slot was not in the power flow: no share
                    "loss_w": round(1000 * e.share_kw.get(x["match_id"], 0.0)),
                    "loss_w_without_ropf": round(
                        1000 * e.share_kw_without_ropf.get(x["match_id"], 0.0)
                    ),
                }
                for x in run
            ]
            # an interval can hold more trades than one market.losses record may list (its
            # payload is bounded): the same instant's shares then go in several records
            for k in range(0, len(shares), LOSS_SHARES_PER_TX):
                payload = {
                    "from_ms": t,
                    "shares": shares[k : k + LOSS_SHARES_PER_TX],
                    "total_loss_w": round(1000 * e.loss_kw),
                    "total_loss_w_without_ropf": round(1000 * e.loss_kw_without_ropf),
                }
                must(client.submit(self.key, "market.losses", payload), f"loss shares from {t}")
                n += 1
        return n


def reactive_payload(
    match_id: str, setpoints: list[dict[str, Any]], taps: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """A ``market.reactive`` payload: the regulators' set-points and, when the DSO moves tap
    changers, their positions (left out, not empty, without: the record encodes as before)."""
    payload: dict[str, Any] = {"match_id": match_id, "setpoints": setpoints}
    if taps:
        payload["taps"] = taps
    return payload


def _spec(m: dict[str, Any], at_ms: int | None = None, slot_ms: int = 900_000) -> TradeSpec:
    """A match as the physics sees it: its power in the slot holding ``at_ms`` (its profile's
    entry for that slot), or its constant power."""
    power_w = m["power_w"] if at_ms is None else power_at(m, at_ms, slot_ms)
    return TradeSpec(m["match_id"], m["seller_node"], m["buyer_node"], power_w / 1000)


def _specs(running: Sequence[dict[str, Any]], at_ms: int, slot_ms: int) -> list[TradeSpec]:
    """The trades running at ``at_ms`` with their power then, leaving out those at zero power
    in that slot (a profile's night slots): they inject and draw nothing."""
    specs = [_spec(x, at_ms, slot_ms) for x in running]
    return [s for s in specs if s.power_kw > 0]


def power_changes(
    matches: Sequence[dict[str, Any]], lo_ms: int, hi_ms: int, slot_ms: int
) -> set[int]:
    """Slot boundaries in (lo_ms, hi_ms) where a profiled match's power changes: the instants
    where a certification must evaluate the grid again (each slot of a profile would be
    evaluated, but unchanged slots give the same operating point)."""
    out = set()
    for x in matches:
        profile = x.get("profile_w")
        if profile is None:
            continue
        for k in range(1, len(profile)):
            t = x["start_ms"] + k * slot_ms
            if lo_ms < t < hi_ms and profile[k] != profile[k - 1]:
                out.add(t)
    return out
