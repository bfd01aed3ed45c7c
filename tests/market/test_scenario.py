"""Scenario files: the shipped ones load, and every malformed input is refused by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from gridledger.market.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    resolve_scenario,
    shipped_scenarios,
)

GOOD = {
    "name": "t",
    "case": "microgrid9",
    "control": "q",
    "times": {"t1": "2026-01-01T10:00:00Z", "t2": "2026-01-01T10:15:00Z"},
    "trades": [
        {"id": "a", "seller": "DG2", "buyer_bus": 5, "power_kw": 100, "start": "t1", "end": "t2"}
    ],
}


def test_shipped_scenarios_are_packaged_and_mirrored_at_the_top_level():
    shipped = shipped_scenarios()
    assert set(shipped) >= {"seed000_case1", "seed000_case2", "seed002_ieee9"}
    top = Path(__file__).resolve().parents[2] / "scenarios"
    for name, path in shipped.items():
        assert (top / f"{name}.yaml").read_text() == path.read_text()
    assert resolve_scenario("seed000_case1.yaml") == shipped["seed000_case1"]


def test_seed000_case1_reads_as_the_paper_says():
    s = load_scenario("seed000_case1")
    assert [(t.id, t.seller, t.buyer_bus, t.power_kw) for t in s.trades] == [
        ("tr1", "DG2", 5, 300.0),
        ("tr2", "DG3", 7, 200.0),
        ("tr3", "bus 1", 9, 250.0),
    ]
    assert [iv.id for iv in s.intervals] == ["t1-t2", "t2-t3", "t3-t4"]
    assert [len(s.trades_in(iv)) for iv in s.intervals] == [1, 2, 3]
    assert all(iv.hours == 0.25 for iv in s.intervals)
    assert {g: sp.q_kvar for g, sp in s.initial_setpoints.items()} == {"DG2": 0, "DG3": 0, "DG4": 0}


def mutate(path: str, value):
    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("trades.0.buyer_bus", 42, r"buyer_bus 42 is not a bus of microgrid9"),
        ("trades.0.power_kw", -5, r"power_kw must be positive"),
        ("trades.0.power_kw", "lots", r"power_kw must be a finite number"),
        ("trades.0.seller", "DG9", r"'DG9' is neither a generator"),
        ("trades.0.end", "2026-01-01T09:00:00Z", r"end must be after start"),
        ("trades.0.start", "yesterday", r"neither a time label nor an ISO 8601"),
        ("method", "pso", r"method must be one of exact, gso, sbde, de"),
        ("control", "angle", r"control must be 'vm' or 'q'"),
        ("case", "nosuch", r"case: unknown case 'nosuch'"),
        ("name", KeyError, r"missing field 'name'"),
        ("colour", "red", r"unknown field\(s\) \['colour'\]"),
        ("voltage_limits_pu", [1.1, 0.9], r"voltage_limits_pu must be"),
        ("price_utoken_per_kwh", 0.5, r"price_utoken_per_kwh must be a non-negative integer"),
        ("regulators", ["DG2", "X"], r"regulators: no generator 'X'"),
        ("initial_setpoints", {"DG2": {"p_kw": 1}}, r"initial_setpoints.DG2 must be"),
    ],
)
def test_bad_scenarios_are_refused_by_name(path, value, match):
    with pytest.raises(ScenarioError, match=match):
        parse_scenario(mutate(path, value), source="bad.yaml")


def test_duplicate_trades_and_overlapping_intervals():
    data = copy.deepcopy(GOOD)
    data["trades"].append(dict(data["trades"][0]))
    with pytest.raises(ScenarioError, match="duplicate trade id 'a'"):
        parse_scenario(data)
    data = copy.deepcopy(GOOD)
    data["times"]["t3"] = "2026-01-01T10:30:00Z"
    data["intervals"] = [
        {"id": "i1", "start": "t1", "end": "t3"},
        {"id": "i2", "start": "t2", "end": "t3"},
    ]
    with pytest.raises(ScenarioError, match="intervals i1 and i2 overlap"):
        parse_scenario(data)
    data["intervals"] = [{"id": "i1", "start": "t2", "end": "t1"}]
    with pytest.raises(ScenarioError, match=r"intervals\[0\] \(i1\): end must be after start"):
        parse_scenario(data)


def test_files_and_names(tmp_path):
    with pytest.raises(ScenarioError, match="no shipped scenario by that name"):
        load_scenario("nosuch")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(GOOD))
    assert load_scenario(ok).trades[0].power_kw == 100.0
