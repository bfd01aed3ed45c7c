"""The DSO agent on a real LV grid with rooftop PV, configured by a dso.yaml: trades from the
chain certified with the PV inverters as paid reactive regulators; a seller without generation
and bad configurations are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn
import pytest
import yaml

from gridledger.agents.dso_agent import DsoAgent, GridPhase
from gridledger.agents.dso_config import DsoConfigError, load_dso_config
from gridledger.agents.prosumer_agent import OrderSpec, ProsumerAgent
from gridledger.chain.contracts.market import PENDING, loss_steps_key, match_key, reactive_key

from .localworld import SLOT, T, prosumer_chain

# CIGRE LV: PV at buses 14 and 40; Load R11 at bus 12, Load C14 at bus 37
BUSES = {"PV14": 14, "PV40": 40, "R11": 12, "C14": 37}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> str:
    net = pn.create_cigre_network_lv()
    for bus, p_mw, sn in ((14, 0.004, 0.015), (40, 0.006, 0.02)):
        pp.create_sgen(net, bus, p_mw=p_mw, q_mvar=0.0, sn_mva=sn, name=f"PV{bus}")
    path = tmp_path_factory.mktemp("grid") / "cigre_lv_pv.json"
    pp.to_json(net, str(path))
    return str(path)


@pytest.fixture
def world(tmp_path: Path):
    chain, keys, dso = prosumer_chain(tmp_path / "home", "dso-lv", BUSES)
    yield chain, keys, dso
    chain.close()


def _config(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "dso.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _trade(chain, keys, seller: str, buyer: str, power_w: int) -> None:
    for name, kind, price in ((seller, "offer", 100_000), (buyer, "bid", 120_000)):
        spec = OrderSpec(kind, power_w, price, T, T + SLOT)
        ProsumerAgent(name, keys[name], BUSES[name], [spec]).step(chain)


def test_dso_certifies_on_a_real_grid_and_refuses_a_seller_without_generation(
    world, grid, tmp_path
) -> None:
    chain, keys, dso = world
    regs = {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex}
    evaluator, accounts = load_dso_config(
        _config(tmp_path, {"method": "exact", "regulators": regs}), grid
    )
    assert accounts == {14: keys["PV14"].pub_hex, 40: keys["PV40"].pub_hex}
    assert evaluator.settings.control == "q"  # the grid's own: PV inverters inject Q
    agent = DsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, tmp_path / "docs")

    _trade(chain, keys, "PV14", "R11", 5_000)
    chain.produce(T - 6 * SLOT)
    (mid,) = chain.state(PENDING)
    assert agent.step(chain) == 3  # loss shares, reactive set-points, approval
    chain.produce(T - 6 * SLOT + 1)
    assert chain.state(match_key(mid))["status"] == "approved"
    setpoints = chain.state(reactive_key(mid))["setpoints"]
    assert {(s["node"], s["account"]) for s in setpoints} == {(b, a) for b, a in accounts.items()}
    assert all(s["q_var"] != 0 for s in setpoints)  # the inverters leave unit power factor
    ((from_ms, share_w),) = chain.state(loss_steps_key(mid))
    assert from_ms == T and 0 < share_w < 5_000
    # the DSO's off-chain document: losses with R-OPF below those without
    doc = json.loads((tmp_path / "docs" / f"{mid}.json").read_text())
    (interval,) = doc["intervals"]
    cert = interval["evaluation"]
    assert cert["loss_with_ropf_kw"] < cert["loss_without_ropf_kw"]
    assert cert["no_load_loss_kw"] == 0.0  # CIGRE LV's transformers have no iron losses

    _trade(chain, keys, "R11", "C14", 2_000)  # bus 12 has a load and no generation
    chain.produce(T - 5 * SLOT)
    (mid2,) = chain.state(PENDING)
    agent.step(chain)
    chain.produce(T - 5 * SLOT + 1)
    record = chain.state(match_key(mid2))
    assert record["status"] == "rejected"
    assert agent.log[-1]["reasons"] == [
        f"trade {mid2}: seller bus 12 has no generation in cigre_lv_pv"
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"regulators": {"PV99": "ab" * 32}}, "no generator 'PV99'"),
        ({"regulators": {"PV14": "xyz"}}, "64-digit lowercase hex"),
        ({"regulators": {}}, "non-empty mapping"),
        ({"regulators": {"PV14": "ab" * 32}, "metod": "exact"}, r"unknown field\(s\) \['metod'\]"),
        ({"regulators": {"PV14": "ab" * 32}, "method": "magic"}, "method must be one of"),
    ],
)
def test_bad_dso_configuration_names_the_field(grid, tmp_path, doc, message) -> None:
    with pytest.raises(DsoConfigError, match=message):
        load_dso_config(_config(tmp_path, doc), grid)


def test_unknown_grid_or_missing_file(tmp_path) -> None:
    with pytest.raises(DsoConfigError, match="no DSO configuration file"):
        load_dso_config(tmp_path / "nope.yaml", "microgrid9")
    path = _config(tmp_path, {"regulators": {"PV14": "ab" * 32}})
    with pytest.raises(DsoConfigError, match=r"grid 'nowhere\.json'"):
        load_dso_config(path, "nowhere.json")


def test_matches_of_one_interval_are_evaluated_and_paid_together(world, grid, tmp_path) -> None:
    from gridledger.agents.dso_service import IntervalDsoAgent
    from gridledger.chain.contracts.market import reactive_key

    chain, keys, dso = world
    regs = {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex}
    evaluator, accounts = load_dso_config(_config(tmp_path, {"regulators": regs}), grid)
    calls = []
    solo = evaluator.certify

    def counted(trades, *args, **kwargs):
        calls.append(sorted(t.trade_id for t in trades))
        return solo(trades, *args, **kwargs)

    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, tmp_path / "docs")
    _trade(chain, keys, "PV14", "R11", 5_000)
    _trade(chain, keys, "PV40", "C14", 4_000)
    chain.produce(T - 6 * SLOT)
    pending = chain.state(PENDING)
    assert len(pending) == 2
    evaluator.certify = counted
    assert agent.step(chain) == 1 + 2 * 2  # one loss record, set-points + approval per match
    chain.produce(T - 6 * SLOT + 1)
    assert calls == [sorted(pending)]  # one power flow + R-OPF for the interval
    assert {chain.state(match_key(m))["status"] for m in pending} == {"approved"}
    # the regulators' pay for the interval, split 5:4 over the two matches, is the
    # evaluation's pay for one slot — paid once, not once per match
    evaluator.certify = solo
    whole, _ = evaluator.certify(
        [_spec_of(chain, m) for m in pending], T, SLOT, evaluator.initial_state(), 100_000, None
    )
    paid: dict[int, list[int]] = {}
    for m in pending:
        for sp in chain.state(reactive_key(m))["setpoints"]:
            paid.setdefault(sp["node"], []).append(sp["utoken_per_slot"])
    expected = {r.bus: r.utoken_per_slot for r in whole.regulators}
    assert {b: sum(v) for b, v in paid.items()} == expected
    assert sum(expected.values()) > 0


def test_an_interval_that_breaks_a_limit_refuses_the_match_that_breaks_it(
    world, grid, tmp_path
) -> None:
    """The culprit is found from the broken limit (market/culprits.py), not by certifying the
    interval's matches one by one: one evaluation of the interval, one re-check without it."""
    from gridledger.agents.dso_service import IntervalDsoAgent

    chain, keys, dso = world
    regs = {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex}
    evaluator, accounts = load_dso_config(_config(tmp_path, {"regulators": regs}), grid)
    calls = []
    solo = evaluator.certify

    def counted(trades, *args, **kwargs):
        calls.append(sorted(t.trade_id for t in trades))
        return solo(trades, *args, **kwargs)

    evaluator.certify = counted
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, tmp_path / "docs")
    _trade(chain, keys, "PV40", "C14", 4_000)
    _trade(chain, keys, "PV14", "R11", 40_000)  # far beyond PV14's 15 kVA
    chain.produce(T - 6 * SLOT)
    small, big = chain.state(PENDING)
    agent.step(chain)
    chain.produce(T - 6 * SLOT + 1)
    assert calls == [sorted([small, big]), [small]]
    assert chain.state(match_key(small))["status"] == "approved"
    assert chain.state(match_key(big))["status"] == "rejected"
    (refusal,) = [e for e in agent.log if e.get("match") == big]
    (why,) = refusal["reasons"]
    assert why.startswith("refused: capability limit at generator") and "(PV14)" in why
    assert chain.state(match_key(big))["reasons"] == [why]


def _spec_of(chain, mid: str):
    from gridledger.agents.dso_agent import _spec

    return _spec(chain.state(match_key(mid))["match"])


def test_an_interval_buyer_who_cannot_escrow_its_extras_is_refused_by_name(
    world, grid, tmp_path
) -> None:
    """The interval's other match is approved; only the buyer short of its extras (reactive pay
    and losses at the cap) is refused, with that reason."""
    from gridledger.agents.dso_service import IntervalDsoAgent
    from gridledger.chain.contracts.tokens import balance_key

    chain, keys, dso = world
    regs = {"PV14": keys["PV14"].pub_hex, "PV40": keys["PV40"].pub_hex}
    evaluator, accounts = load_dso_config(_config(tmp_path, {"regulators": regs}), grid)
    agent = IntervalDsoAgent(dso, [GridPhase(0, evaluator, accounts)], SLOT, tmp_path / "docs")
    _trade(chain, keys, "PV14", "R11", 5_000)
    _trade(chain, keys, "PV40", "C14", 4_000)
    chain.produce(T - 6 * SLOT)
    first, second = chain.state(PENDING)
    left = int(chain.state(balance_key("utoken", keys["C14"].pub_hex)))
    payload = {"to": dso.pub_hex, "denom": "utoken", "amount": left}
    assert chain.submit(keys["C14"], "token.transfer", payload).ok
    chain.produce(T - 6 * SLOT + 1)
    agent.step(chain)
    chain.produce(T - 6 * SLOT + 2)
    assert chain.state(match_key(first))["status"] == "approved"
    rejected = chain.state(match_key(second))
    assert rejected["status"] == "rejected"
    assert rejected["reasons"][0].startswith("the buyer cannot escrow ")
