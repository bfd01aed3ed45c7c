"""The DSO's settings for a real grid, from a ``dso.yaml``, and the evaluator they give.

The demo builds its DSO from a shipped scenario; a DSO operating a real grid gives the grid
(any name :func:`gridledger.grid.cases.load_case` accepts: a pandapower JSON file,
``pandapower:<name>``, a MATPOWER file, ``simbench:<code>``) and a configuration::

    method: exact                 # R-OPF solver: exact | gso | sbde | de
    seed: 0                       # for the population solvers
    control: q                    # optional; default: the grid's own (q for PV inverters)
    voltage_limits_pu: [0.95, 1.05]   # optional; default: the grid's bus limits
    k_per_kw: 0.1                 # k of seed 000 eq. 8
    regulators:                   # the nodes paid for reactive support: generator -> account
      "LV3.101 SGen 1": 5f1e...   # (32-byte public key, hex)
    taps: all                     # optional: on-load tap changers the R-OPF moves, by branch
                                  # name, or all; default none (taps stay where the grid has them)

The DSO moves exactly the listed regulators; a regulator named here must be a generator of the
grid whose bus is not shared with another listed one (set-points go on chain per bus).  Trades
come from the chain with seller and buyer buses; a seller must have generation at its bus (a
static generator, storage, a generator): a trade from a bus with none is refused with that
reason instead of being invented as a new injection.

With ``taps``, every interval's R-OPF also searches the named tap changers' positions: a
pattern search on their integer lattice (``grid/ropf/tap_search.py``) that starts at the
previous interval's positions and runs the whole certificate workflow at each tap vector,
keeping the feasible one with the least losses (the previous positions are always evaluated,
so moving a tap never makes the certificate worse).  The chosen positions are part of the
set-point history (``HOME/documents/setpoints.json``) and of the reactive record on chain.
A tap name that is not a branch, a line, or a transformer without usable tap data (pandapower:
a ``Ratio`` tap changer with integer positions) is an error at start naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gridledger.agents.dso_agent import Evaluation, TradeSpec
from gridledger.agents.evaluator import ScenarioEvaluator
from gridledger.chain.contracts.market import MAX_TAPS
from gridledger.grid.taps import at_positions, tap_positions, tap_range
from gridledger.market.scenario import ScenarioError, SetPoint, parse_scenario

_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_KNOWN = {"method", "seed", "control", "voltage_limits_pu", "k_per_kw", "regulators", "taps"}


@dataclass
class TapState:
    """A tap-moving DSO's state after an interval: the regulators' set-points (ΔQ is measured
    against them) and the tap positions (the next interval's search starts there)."""

    setpoints: dict[str, SetPoint]
    taps: dict[str, int]


class DsoConfigError(ValueError):
    """A configuration the DSO cannot run with; the message names the file and the field."""


@dataclass
class GridEvaluator(ScenarioEvaluator):
    """:class:`ScenarioEvaluator` on an operator's grid: sellers must have generation; with
    ``taps``, the named tap changers are R-OPF controls and the state is a :class:`TapState`."""

    taps: list[str] = field(default_factory=list)

    def initial_state(self) -> Any:
        if not self.taps:
            return super().initial_state()
        start = tap_positions(self.net)
        return TapState(super().initial_state(), {n: start[n] for n in self.taps})

    def dump_state(self, state: Any) -> Any:
        if not isinstance(state, TapState):
            return super().dump_state(state)
        return {"setpoints": super().dump_state(state.setpoints), "taps": dict(state.taps)}

    def load_state(self, data: Any) -> Any:
        if not self.taps:
            return super().load_state(data)
        grid_taps = self.initial_state().taps
        if set(data) != {"setpoints", "taps"}:  # written before taps were controls
            return TapState(super().load_state(data), grid_taps)
        # a position the grid file no longer allows (its range was edited) restarts from the
        # grid's own position rather than certify a tap the transformer cannot take
        taps = {
            n: int(p)
            for n, p in data["taps"].items()
            if n in self.taps and int(p) in tap_range(self.net, n)
        }
        return TapState(super().load_state(data["setpoints"]), {**grid_taps, **taps})

    def rank(
        self,
        buyer_bus: int,
        power_kw: float,
        sellers: Sequence[int],
        running: Sequence[TradeSpec],
        previous: Any,
    ) -> list[dict[str, Any]]:
        if isinstance(previous, TapState):  # ranked on the grid with the taps where they are
            net = at_positions(self.net, previous.taps)
            return self.rank_on(net, buyer_bus, power_kw, sellers, running, previous.setpoints)
        return super().rank(buyer_bus, power_kw, sellers, running, previous)

    def certify(
        self,
        trades: Sequence[TradeSpec],
        start_ms: int,
        slot_ms: int,
        previous: Any,
        price_utoken_per_kwh: int,
        new_trade: str | None,
    ) -> tuple[Evaluation, Any]:
        generating = {int(b) for b in self.net.gen.bus}
        missing = [t for t in trades if t.seller_bus not in generating]
        if missing:
            reasons = [
                f"trade {t.trade_id}: seller bus {t.seller_bus} has no generation in "
                f"{self.net.name}" for t in missing
            ]  # fmt: skip
            nan = float("nan")
            evaluation = Evaluation(
                feasible=False,
                reasons=reasons,
                loss_kw=nan,
                loss_kw_without_ropf=nan,
                share_kw={t.trade_id: nan for t in trades},
                share_kw_without_ropf={t.trade_id: nan for t in trades},
                regulators=[],
                document={"reasons": reasons},
            )
            same = (
                TapState(dict(previous.setpoints), dict(previous.taps))
                if isinstance(previous, TapState)
                else dict(previous)
            )
            return evaluation, same
        if not isinstance(previous, TapState):
            return super().certify(
                trades, start_ms, slot_ms, previous, price_utoken_per_kwh, new_trade
            )
        return self._certify_with_taps(
            trades, start_ms, slot_ms, previous, price_utoken_per_kwh, new_trade
        )

    def _certify_with_taps(
        self,
        trades: Sequence[TradeSpec],
        start_ms: int,
        slot_ms: int,
        previous: TapState,
        price_utoken_per_kwh: int,
        new_trade: str | None,
    ) -> tuple[Evaluation, TapState]:
        """The whole workflow at each tap vector the pattern search visits; the best one (a
        feasible certificate first, then the least losses with R-OPF) is the answer."""
        from gridledger.grid.ropf.tap_search import _pattern_search

        names = self.taps
        ranges = [tap_range(self.net, n) for n in names]
        start = tuple(previous.taps[n] for n in names)
        solved: dict[tuple[int, ...], tuple[Evaluation, dict[str, SetPoint]]] = {}

        def evaluate(pos: tuple[int, ...]) -> tuple[int, float]:
            if pos not in solved:
                net = at_positions(self.net, dict(zip(names, pos, strict=True)))
                solved[pos] = self.certify_on(
                    net, trades, start_ms, slot_ms, previous.setpoints,
                    price_utoken_per_kwh, new_trade,
                )  # fmt: skip
            e = solved[pos][0]
            loss = e.loss_kw if math.isfinite(e.loss_kw) else math.inf
            return (0 if e.feasible else 1, loss)

        best = _pattern_search(start, ranges, evaluate)
        if evaluate(start) <= evaluate(best):
            best = start  # a tap moves only for a strictly better certificate
        evaluation, setpoints = solved[best]
        positions = dict(zip(names, best, strict=True))
        evaluation.taps = positions
        evaluation.document["taps"] = dict(positions)
        evaluation.document["taps_before"] = dict(previous.taps)
        evaluation.document["loss_with_ropf_kw_at_taps_before"] = solved[start][0].loss_kw
        evaluation.document["tap_vectors_evaluated"] = len(solved)
        return evaluation, TapState(setpoints, positions)


def load_dso_config(path: str | Path, grid: str) -> tuple[GridEvaluator, dict[int, str]]:
    """The evaluator for ``grid`` and the account paid at each regulator bus."""
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise DsoConfigError(f"no DSO configuration file {source}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DsoConfigError(f"{source}: not valid YAML: {exc}") from exc
    return dso_config_from_dict(data, grid, source)


def dso_config_from_dict(
    data: Any, grid: str, source: str = "<dso config>"
) -> tuple[GridEvaluator, dict[int, str]]:
    def fail(msg: str) -> DsoConfigError:
        return DsoConfigError(f"{source}: {msg}")

    if not isinstance(data, dict):
        raise fail("top level must be a mapping")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise fail(f"unknown field(s) {unknown}; known: {sorted(_KNOWN)}")
    regulators = data.get("regulators")
    if not isinstance(regulators, dict) or not regulators:
        raise fail("regulators must be a non-empty mapping generator name -> account (hex key)")
    for name, account in regulators.items():
        if not isinstance(account, str) or not _HEX_KEY.match(account):
            raise fail(f"regulators.{name}: account must be a 64-digit lowercase hex public key")
    from gridledger.grid.cases import load_case
    from gridledger.grid.network import NetworkError

    try:
        network = load_case(grid)
    except (NetworkError, ValueError) as exc:
        raise fail(f"grid {grid!r}: {exc}") from exc
    scenario_doc = {
        "name": f"dso:{network.name}",
        "case": grid,
        "trades": [],
        "regulators": [str(n) for n in regulators],
        **{k: data[k] for k in ("method", "seed", "control", "voltage_limits_pu", "k_per_kw")
           if k in data},
    }  # fmt: skip
    try:
        scenario = parse_scenario(scenario_doc, source=source, network=network)
    except ScenarioError as exc:
        raise DsoConfigError(str(exc)) from exc
    taps = _tap_names(data.get("taps"), network, fail)
    evaluator = GridEvaluator(scenario, taps=taps)
    accounts = {bus: regulators[name] for bus, name in evaluator.regulator_buses.items()}
    if len(accounts) != len(regulators):
        raise fail("regulators: two listed generators share a bus; list one per bus")
    return evaluator, accounts


def _tap_names(value: Any, network: Any, fail: Any) -> list[str]:
    """The tap changers a ``taps`` field names (none when absent), checked against the grid."""
    from gridledger.grid.network import NetworkError
    from gridledger.grid.taps import select_taps

    if value is None:
        return []
    if value != "all" and not (
        isinstance(value, list) and value and all(isinstance(n, str) and n for n in value)
    ):
        raise fail("taps must be 'all' or a non-empty list of transformer (branch) names")
    try:
        names = select_taps(network, value)
    except NetworkError as exc:
        raise fail(f"taps: {exc}") from exc
    if len(names) > MAX_TAPS:
        raise fail(f"taps: {len(names)} tap changers; a reactive record holds at most {MAX_TAPS}")
    return names
