"""The DSO as a long-running service: follow a node, certify every pending match.

``gridledger dso serve --home DIR --node URL --grid GRID --config dso.yaml`` runs
:func:`serve`: it reads the node's ``/events`` stream (server-sent events, one per committed
block), reconnecting with ``since=<last height>`` whenever the stream breaks (a node restart),
and at every block lets :class:`IntervalDsoAgent` certify the pending matches of the earliest
interval, all of them together (the next interval, in a later block, sees their approval).

Restart safety comes from where the state lives:

* which matches still need a certificate is the chain's own pending list — a match leaves it
  when its certificate commits, so a restarted service neither misses one nor certifies one
  twice (a certificate posted twice is refused by the market contract);
* the optimized set-points of every interval, which ΔQ is measured against (and the tap
  positions, when ``dso.yaml`` lets the DSO move taps), are in
  ``HOME/documents/setpoints.json`` (written atomically), the certificate documents beside them;
* ``HOME/status.json`` (written atomically after each block with work) is what
  ``gridledger dso status`` shows: certified and refused matches with reasons, the matches
  waiting, and the seconds each certificate took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gridledger.agents.client import ChainClient, must
from gridledger.agents.dso_agent import (
    DsoAgent,
    Evaluation,
    GridPhase,
    _specs,
    power_changes,
    reactive_payload,
)
from gridledger.agents.dso_config import load_dso_config
from gridledger.agents.runner import HttpChain
from gridledger.chain.contracts.market import (
    MAX_LOSS_SHARE_PPM,
    PARAMS,
    PENDING,
    buyer_extras_utoken,
    default_params,
    document_digest,
    loss_cap_w,
    match_key,
    reactive_digest,
    taps_record,
    trade_record,
)
from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.keys import KeyPair
from gridledger.market.culprits import choose_refusals
from gridledger.market.settlement import allocate_pro_rata

STATUS_FILE = "status.json"
# evaluations of one interval while refusing culprits: each is one R-OPF per instant
MAX_CULPRIT_ROUNDS = 8
RECONNECT_S = 0.5


class IntervalDsoAgent(DsoAgent):
    """Certifies per interval: the pending matches that start delivering in the same slot are
    evaluated together — one power flow and one R-OPF per instant with all of them and the
    approved trades superposed — and approved together.  The regulators' pay for that interval
    (the ΔQ all of them cause) is split over them pro rata to their power, so it is paid once.

    If the interval breaks a limit, the fewest, largest contributors are refused by the rule of
    ``market/culprits.py`` (sensitivities of the broken voltage, line loading or capability to
    each trade, from one Jacobian; largest first until the excess is covered; ties by match id)
    and the rest is re-evaluated, at most ``MAX_CULPRIT_ROUNDS`` times: a few R-OPFs per
    interval, not two per match.  Each refusal names the element and the limit.  A buyer who
    cannot escrow its extras is refused by name the same way.  An interval found after its
    delivery started is refused whole (late), without evaluating it match by match.
    """

    def step(self, client: ChainClient) -> int:
        pending = [m for m in client.state(PENDING) or [] if m not in self.handled]
        if not pending:
            return 0
        records = {m: client.state(match_key(m)) for m in pending}
        first = min(records[m]["match"]["start_ms"] for m in pending)
        group = [m for m in pending if records[m]["match"]["start_ms"] == first]
        if len(group) == 1:
            return self.certify(client, group[0])
        return self.certify_interval(client, group, records)

    def _evaluate(
        self, client: ChainClient, kept: list[str], records: dict[str, dict[str, Any]]
    ) -> tuple[dict[int, tuple[list[dict[str, Any]], Evaluation]], dict[int, Any]]:
        matches = [records[g]["match"] for g in kept]
        start = matches[0]["start_ms"]
        end = max(m["end_ms"] for m in matches)
        phase = self.phase_at(start)
        window = {**matches[0], "start_ms": start, "end_ms": end}
        others = [x for x in self._running(client, window) if x["match_id"] not in kept]
        everyone = [*others, *matches]
        instants = {start}
        for x in everyone:
            for t in (x["start_ms"], x["end_ms"]):
                if start < t < end:
                    instants.add(t)
        instants |= power_changes(everyone, start, end, self.slot_ms)
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]] = {}
        new_states: dict[int, Any] = {}
        for t in sorted(instants):
            running = [x for x in everyone if x["start_ms"] <= t < x["end_ms"]]
            prev = new_states[max(new_states)] if new_states else phase.previous(t)
            evaluation, state = phase.evaluator.certify(
                _specs(running, t, self.slot_ms), t, self.slot_ms, prev,
                matches[0]["price_utoken_per_kwh"], ",".join(kept) if t == start else None,
            )  # fmt: skip
            evaluations[t] = (running, evaluation)
            new_states[t] = state
        return evaluations, new_states

    def _culprits(
        self,
        kept: list[str],
        start: int,
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
        new_states: dict[int, Any],
    ) -> dict[str, str]:
        """The rule of ``market/culprits.py`` at every infeasible instant of the interval."""
        phase = self.phase_at(start)
        found: dict[str, str] = {}
        for t, (run, e) in sorted(evaluations.items()):
            if e.feasible:
                continue
            for g in kept:  # a reason that names the trade itself (e.g. no generation there)
                named = [r for r in e.reasons if r.startswith(f"trade {g}:")]
                if named:
                    found.setdefault(g, named[0][:200])
            if found:
                continue
            over = phase.evaluator.overshoots(_specs(run, t, self.slot_ms), t, new_states[t])
            for g, why in choose_refusals(over, [g for g in kept if g not in found]).items():
                found.setdefault(g, why)
        return found

    def certify_interval(
        self, client: ChainClient, group: list[str], records: dict[str, dict[str, Any]]
    ) -> int:
        start = records[group[0]]["match"]["start_ms"]
        if client.time_ms() >= start:
            late = "the DSO could not certify the trade before its delivery started"
            return self._refuse(client, {g: late for g in group}, records, group)
        kept, refused = list(group), {}
        evaluations, new_states = self._evaluate(client, kept, records)
        for _ in range(MAX_CULPRIT_ROUNDS):
            if all(e.feasible for _, e in evaluations.values()):
                broke = self._unaffordable(client, kept, records, evaluations)
            else:
                broke = self._culprits(kept, start, evaluations, new_states)
                if not broke:  # no trade of the interval pushes the limit: none can be approved
                    why = "; ".join(r for _, e in evaluations.values() for r in e.reasons)
                    broke = {g: f"refused: the interval breaks a limit whatever is approved: "
                                f"{why}"[:200] for g in kept}  # fmt: skip
            if not broke:
                break
            refused.update(broke)
            kept = [g for g in kept if g not in broke]
            if not kept:
                break
            evaluations, new_states = self._evaluate(client, kept, records)
        else:
            why = "; ".join(r for _, e in evaluations.values() for r in e.reasons)
            refused.update({g: f"refused after {MAX_CULPRIT_ROUNDS} rounds: {why}"[:200]
                            for g in kept})  # fmt: skip
            kept = []
        n = self._refuse(client, refused, records, group) if refused else 0
        if kept:
            n += self._approve(client, kept, records, evaluations, new_states)
        return n

    def _unaffordable(
        self,
        client: ChainClient,
        kept: list[str],
        records: dict[str, dict[str, Any]],
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
    ) -> dict[str, str]:
        """Matches whose buyer cannot escrow its extras or whose loss share is beyond the cap:
        what the contract would refuse, refused here by name before anything is posted."""
        phase = self.phase_at(records[kept[0]]["match"]["start_ms"])
        setpoints_of = self._setpoints(kept, records, phase, evaluations)
        prm = client.state(PARAMS) or default_params()
        out = {}
        for g in kept:
            m = records[g]["match"]
            for _, (_run, e) in sorted(evaluations.items()):
                if round(1000 * e.share_kw.get(g, 0.0)) > loss_cap_w(m):
                    out[g] = (f"the loss share of {g} would exceed "
                              f"{MAX_LOSS_SHARE_PPM // 10_000} % of its power")  # fmt: skip
            extras = buyer_extras_utoken(m, setpoints_of[g], prm)
            if int(client.state(balance_key("utoken", m["buyer"])) or 0) < extras:
                out.setdefault(
                    g, f"the buyer cannot escrow {extras} utoken for reactive pay and losses"
                )
        return out

    def _refuse(
        self,
        client: ChainClient,
        refused: dict[str, str],
        records: dict[str, dict[str, Any]],
        group: list[str],
    ) -> int:
        for g, why in sorted(refused.items()):
            doc = {"match": records[g]["match"], "match_digest": records[g]["digest"],
                   "feasible": False, "reasons": [why], "interval": group}  # fmt: skip
            must(
                client.submit(
                    self.key,
                    "market.certificate",
                    {
                        "match_id": g,
                        "match_digest": records[g]["digest"],
                        "document_digest": document_digest(doc),
                        "verdict": "rejected",
                        "reasons": [why[:200]],
                    },
                ),
                f"certificate for {g}",
            )
            self.handled[g] = "rejected"
            entry = {"match": g, "verdict": "rejected", "reasons": [why], "interval": group}
            self.log.append({**entry, "document_digest": document_digest(doc)})
        return len(refused)

    def _approve(
        self,
        client: ChainClient,
        group: list[str],
        records: dict[str, dict[str, Any]],
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
        new_states: dict[int, Any],
    ) -> int:
        matches = [records[g]["match"] for g in group]
        phase = self.phase_at(matches[0]["start_ms"])
        document = {
            "matches": matches,
            "match_digests": {g: records[g]["digest"] for g in group},
            "feasible": True,
            "reasons": [],
            "intervals": [
                {"from_ms": t, "trades": [x["match_id"] for x in run], "evaluation": e.document}
                for t, (run, e) in sorted(evaluations.items())
            ],
        }
        digest = document_digest(document)
        if self.documents_dir is not None:
            self.documents_dir.mkdir(parents=True, exist_ok=True)
            for g in group:
                (self.documents_dir / f"{g}.json").write_text(json.dumps(document, indent=1))
        n = self._post_interval(client, group, records, phase, evaluations, digest)
        phase.states.update(new_states)
        self._save_states()
        for g in group:
            self.handled[g] = "approved"
            self.log.append({"match": g, "verdict": "approved", "reasons": [],
                             "document_digest": digest, "interval": group,
                             "taps": dict(evaluations[min(evaluations)][1].taps)})  # fmt: skip
        return n

    def _setpoints(
        self,
        group: list[str],
        records: dict[str, dict[str, Any]],
        phase: GridPhase,
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
    ) -> dict[str, list[dict[str, Any]]]:
        start_eval = evaluations[min(evaluations)][1]
        powers = [records[g]["match"]["power_w"] for g in group]
        regulators = [r for r in start_eval.regulators if r.bus in phase.regulator_accounts]
        pay = {r.bus: allocate_pro_rata(r.utoken_per_slot, powers) for r in regulators}
        return {
            g: [
                {
                    "account": phase.regulator_accounts[r.bus],
                    "node": r.bus,
                    "q_var": round(1000 * r.q_kvar),
                    "delta_q_var": round(1000 * r.delta_q_kvar),
                    "delta_pq_w": round(1000 * r.delta_pq_kw),
                    "utoken_per_slot": pay[r.bus][k],
                }
                for r in regulators
            ]
            for k, g in enumerate(group)
        }

    def _post_interval(
        self,
        client: ChainClient,
        group: list[str],
        records: dict[str, dict[str, Any]],
        phase: GridPhase,
        evaluations: dict[int, tuple[list[dict[str, Any]], Evaluation]],
        digest: str,
    ) -> int:
        setpoints_of = self._setpoints(group, records, phase, evaluations)
        n = self.post_loss_shares(client, evaluations)
        start_eval = evaluations[min(evaluations)][1]
        taps = taps_record(start_eval.taps) if start_eval.taps else None
        for g in group:
            setpoints = setpoints_of[g]
            must(
                client.submit(self.key, "market.reactive", reactive_payload(g, setpoints, taps)),
                f"reactive set-points for {g}",
            )
            cert = {
                "match_id": g,
                "match_digest": records[g]["digest"],
                "document_digest": digest,
                "verdict": "approved",
                "reasons": [],
                "trade": trade_record(records[g]["match"], self.slot_ms),
                "reactive_digest": reactive_digest(setpoints, taps),
            }
            must(client.submit(self.key, "market.certificate", cert), f"certificate for {g}")
            n += 2
        return n


@dataclass
class DsoService:
    home: Path
    key: KeyPair
    agent: IntervalDsoAgent
    certified: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path, key: KeyPair, grid: str, config: Path, slot_ms: int) -> DsoService:
        evaluator, accounts = load_dso_config(config, grid)
        agent = IntervalDsoAgent(
            key, [GridPhase(0, evaluator, accounts)], slot_ms, home / "documents"
        )
        service = cls(home, key, agent)
        service.certified = read_status(home).get("certificates", {})
        return service

    def on_block(self, client: Any) -> int:
        """Certify what is pending (one match per block); record the outcome."""
        t0 = time.perf_counter()
        before = len(self.agent.log)
        posted = self.agent.step(client)
        seconds = time.perf_counter() - t0
        for entry in self.agent.log[before:]:
            if "match" in entry:
                self.certified[entry["match"]] = {
                    "verdict": entry["verdict"],
                    "reasons": entry["reasons"],
                    "seconds": round(seconds, 3),
                    "height": client.height(),
                }
                if entry.get("taps"):
                    self.certified[entry["match"]]["taps"] = entry["taps"]
        if posted or len(self.agent.log) > before:
            self.write_status(client)
        return posted

    def write_status(self, client: Any) -> None:
        pending = [m for m in client.state(PENDING) or [] if m not in self.certified]
        doc = {"certificates": self.certified, "waiting": pending, "height": client.height()}
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / (STATUS_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.home / STATUS_FILE)


def read_status(home: Path) -> dict[str, Any]:
    path = Path(home) / STATUS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def block_events(url: str, since: int, timeout_s: float = 30.0):
    """Heights of committed blocks from the node's ``/events`` stream, from ``since`` on."""
    with (
        httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(timeout_s, read=None)) as h,
        h.stream("GET", "/events", params={"since": since}) as resp,
    ):
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("id: "):
                yield int(line[4:])


def serve(
    home: Path,
    node_url: str,
    grid: str,
    config: Path,
    key: KeyPair,
    stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = print,
) -> None:
    """Follow the node until ``stop()``; survive node restarts by reconnecting."""
    client = _connect(node_url, stop, log)
    if client is None:
        return
    slot_ms = int((client.state(PARAMS) or {}).get("slot_ms", 900_000))
    service = DsoService.create(home, key, grid, config, slot_ms)
    service.agent.warm_up()
    log(f"dso: following {node_url} on {grid} ({slot_ms // 1000} s slots)")
    last = client.height()
    service.on_block(client)
    while not stop():
        try:
            for height in block_events(node_url, last):
                last = height
                service.on_block(client)
                if stop():
                    return
        except (httpx.HTTPError, OSError) as exc:
            log(f"dso: node stream lost ({type(exc).__name__}); reconnecting")
            time.sleep(RECONNECT_S)
            fresh = _connect(node_url, stop, log)
            if fresh is None:
                return
            client = fresh
        except Exception as exc:  # a refused tx or a failed solve: report, go on with the next
            log(f"dso: {type(exc).__name__}: {exc}")
            time.sleep(RECONNECT_S)


def _connect(url: str, stop: Callable[[], bool], log: Callable[[str], None]) -> HttpChain | None:
    while not stop():
        try:
            return HttpChain(url)
        except (httpx.HTTPError, OSError):
            log(f"dso: node {url} not reachable; retrying")
            time.sleep(RECONNECT_S)
    return None
