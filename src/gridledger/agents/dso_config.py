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

The DSO moves exactly the listed regulators; a regulator named here must be a generator of the
grid whose bus is not shared with another listed one (set-points go on chain per bus).  Trades
come from the chain with seller and buyer buses; a seller must have generation at its bus (a
static generator, storage, a generator): a trade from a bus with none is refused with that
reason instead of being invented as a new injection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gridledger.agents.dso_agent import Evaluation, TradeSpec
from gridledger.agents.evaluator import ScenarioEvaluator
from gridledger.market.scenario import ScenarioError, SetPoint, parse_scenario

_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_KNOWN = {"method", "seed", "control", "voltage_limits_pu", "k_per_kw", "regulators"}


class DsoConfigError(ValueError):
    """A configuration the DSO cannot run with; the message names the file and the field."""


@dataclass
class GridEvaluator(ScenarioEvaluator):
    """:class:`ScenarioEvaluator` on an operator's grid: sellers must have generation."""

    def certify(
        self,
        trades: Sequence[TradeSpec],
        start_ms: int,
        slot_ms: int,
        previous: dict[str, SetPoint],
        price_utoken_per_kwh: int,
        new_trade: str | None,
    ) -> tuple[Evaluation, dict[str, SetPoint]]:
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
            return evaluation, dict(previous)
        return super().certify(trades, start_ms, slot_ms, previous, price_utoken_per_kwh, new_trade)


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
    evaluator = GridEvaluator(scenario)
    accounts = {bus: regulators[name] for bus, name in evaluator.regulator_buses.items()}
    if len(accounts) != len(regulators):
        raise fail("regulators: two listed generators share a bus; list one per bus")
    return evaluator, accounts
