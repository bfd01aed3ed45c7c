"""S1 (ADMM aggregator) and S2 (billing) on a real ledger app, against the off-chain ADMM."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gridledger.agents.client import AgentError
from gridledger.agents.der_agent import DerAgent, admm_genesis, agent_keys, open_round
from gridledger.chain import codes
from gridledger.chain.contracts.aggregator import chain_records, replay, round_key
from gridledger.chain.contracts.billing import bill_key
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain
from gridledger.grid.admm import AdmmOptions, solve_admm
from gridledger.grid.feeders import case33bw, head
from gridledger.market.aggregation import SCALE, node_rows

T0 = 1_700_000_000_000
OPTIONS = AdmmOptions(rho=50.0, max_iter=6, eps_pri=1e-9, eps_dual=1e-9)
DSO = KeyPair.from_seed(b"d" * 32)
VALIDATOR = KeyPair.from_seed(b"v" * 32)


@pytest.fixture(scope="module")
def feeder():
    return head(case33bw(), 4)


def _chain(tmp_path, feeder, round_id="r1", meters=()):
    keys = agent_keys(round_id, feeder.n_nodes)
    genesis = admm_genesis("admm-test", DSO, VALIDATOR, keys, T0, meters, agent_utoken=10**9)
    chain = LocalChain(tmp_path, genesis, VALIDATOR, T0)
    return chain, keys


def _run(chain, agents, max_blocks=200):
    for _ in range(max_blocks):
        if all(a.done for a in agents):
            return
        for a in agents:
            a.step(chain)
        chain.produce()
    raise AssertionError("round did not finish")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, feeder):
    chain, keys = _chain(tmp_path_factory.mktemp("s1"), feeder)
    open_round(chain, DSO, feeder, "r1", [k.pub_hex for k in keys], OPTIONS)
    chain.produce()
    agents = [DerAgent(feeder, i, keys[i], "r1") for i in range(feeder.n_nodes)]
    _run(chain, agents)
    return chain, keys


def test_on_chain_round_follows_the_off_chain_admm(finished, feeder):
    chain, _ = finished
    state = chain.state(round_key("r1", "state"))
    assert state["status"] == "max_iter" and state["k"] == OPTIONS.max_iter
    # one subproblem per node, as the agents solve them (a batched solve lands elsewhere within
    # the solver's tolerance, and ADMM iterations amplify that)
    off = solve_admm(feeder, replace(OPTIONS, groups=feeder.n_nodes))
    z_chain = np.array(chain.state(round_key("r1", "z")), dtype=float) / SCALE
    # the same iterations; only the 1e-9 fixed-point rounding differs
    np.testing.assert_allclose(z_chain, off.z, atol=1e-5)
    primal_chain = [h[1] / SCALE for h in state["history"]]
    np.testing.assert_allclose(primal_chain, [h.primal_residual for h in off.history], rtol=1e-3)
    schedule = chain.state(round_key("r1", "schedule"))
    np.testing.assert_allclose(np.array(schedule["p_w"]) / 1e6, off.p_mw, atol=1e-4)


def test_anyone_can_replay_the_aggregator_from_the_records(finished):
    chain, _ = finished
    rounds = replay(chain_records(chain.store))
    r = rounds["r1"]
    assert r["z"] == chain.state(round_key("r1", "z"))
    assert r["history"] == chain.state(round_key("r1", "state"))["history"]
    stored = chain.state(round_key("r1", "schedule"))
    for key in ("z", "p_w", "dlmp_utoken_per_kwh", "status"):
        assert r["schedule"][key] == stored[key]
    assert r["xi"] == chain.state(round_key("r1", "xi"))


def _open_one_iteration(tmp_path, feeder):
    chain, keys = _chain(tmp_path, feeder)
    open_round(chain, DSO, feeder, "r1", [k.pub_hex for k in keys], OPTIONS, timeout_ms=10_000)
    chain.produce()
    return chain, keys


def _payload(chain, feeder, node, k=1):
    rows = node_rows([int(p) for p in feeder.parent], node)
    z = chain.state(round_key("r1", "z"))
    return {
        "dlmp_utoken_per_kwh": [0] * 24,
        "k": k,
        "node": node,
        "p_w": [0] * 24,
        "round": "r1",
        "x": [z[r] for r in rows],
    }


def test_bad_submissions_are_refused_and_change_nothing(tmp_path, feeder):
    chain, keys = _open_one_iteration(tmp_path, feeder)
    before = chain.state(round_key("r1", "state"))
    wrong_iter = chain.submit(keys[1], "admm.submit", _payload(chain, feeder, 1, k=2))
    assert wrong_iter.code == codes.INVALID_PAYLOAD
    assert "submission for iteration 2; round r1 is at 1" in wrong_iter.log
    other_node = chain.submit(keys[1], "admm.submit", _payload(chain, feeder, 2))
    assert other_node.code == codes.UNAUTHORIZED
    assert "copies of node 2 signed by" in other_node.log
    short = _payload(chain, feeder, 1)
    short["x"] = short["x"][:-1]
    refused = chain.submit(keys[1], "admm.submit", short)
    assert refused.code == codes.INVALID_PAYLOAD and "coupling rows" in refused.log
    not_agent = chain.submit(DSO, "admm.submit", _payload(chain, feeder, 0))
    assert not_agent.code == codes.UNAUTHORIZED
    chain.produce()
    assert chain.state(round_key("r1", "state")) == before
    assert chain.state(round_key("r1", "x", 1)) is None


def test_missing_agent_times_out_the_iteration(tmp_path, feeder):
    chain, keys = _open_one_iteration(tmp_path, feeder)
    agents = [DerAgent(feeder, i, keys[i], "r1") for i in range(feeder.n_nodes - 1)]
    for a in agents:
        a.step(chain)
    chain.produce()
    st = chain.state(round_key("r1", "state"))
    assert st["status"] == "collecting" and st["submitted"] == [0, 1, 2]
    early = chain.submit(DSO, "admm.timeout", {"round": "r1"})
    chain.produce()
    assert chain.result(early.txid).code == codes.INVALID_PAYLOAD
    assert "is open until" in chain.result(early.txid).log
    chain.produce(time_ms=st["deadline_ms"] + 1)
    late = DerAgent(feeder, 3, keys[3], "r1")
    with pytest.raises(AgentError, match="iteration 1 of round r1 closed at"):
        late.step(chain)
    out = chain.submit(DSO, "admm.timeout", {"round": "r1"})
    chain.produce()
    assert chain.result(out.txid).code == codes.OK
    st = chain.state(round_key("r1", "state"))
    assert st["status"] == "timed_out" and st["missing"] == [3]
    # the round takes nothing more
    refused = chain.submit(keys[3], "admm.submit", _payload(chain, feeder, 3))
    assert refused.code == codes.INVALID_PAYLOAD and "timed_out" in refused.log


def test_open_checks_the_tree_and_the_opener(tmp_path, feeder):
    chain, keys = _chain(tmp_path, feeder)
    from gridledger.agents.der_agent import round_payload

    payload = round_payload(feeder, "r2", [k.pub_hex for k in keys], OPTIONS, 10_000)
    loop = dict(payload, parent=[-1, 2, 1, 0])
    out = chain.submit(DSO, "admm.open", loop)
    assert out.code == codes.INVALID_PAYLOAD and "parent[1] = 2 must be a node before 1" in out.log
    by_prosumer = chain.submit(keys[0], "admm.open", payload)
    assert by_prosumer.code == codes.ROLE_NOT_ALLOWED


HOUR_MS = 3_600_000


def test_billing_pays_and_charges_at_the_dlmps(tmp_path, feeder):
    meters = [KeyPair.from_seed(bytes([40 + i]) * 32) for i in range(feeder.n_nodes)]
    chain, keys = _chain(tmp_path, feeder, meters=meters)
    open_round(chain, DSO, feeder, "r1", [k.pub_hex for k in keys], replace(OPTIONS, max_iter=2))
    chain.produce()
    _run(chain, [DerAgent(feeder, i, keys[i], "r1") for i in range(feeder.n_nodes)])
    schedule = chain.state(round_key("r1", "schedule"))
    start = T0 + 10 * HOUR_MS
    opened = chain.submit(
        DSO,
        "billing.open",
        {
            "accounts": [k.pub_hex for k in keys],
            "meters": [m.pub_hex for m in meters],
            "penalty_utoken_per_kwh": 100_000,
            "round": "r1",
            "start_ms": start,
            "tolerance_wh": 50,
        },
    )
    chain.produce()
    assert chain.result(opened.txid).code == codes.OK
    node, hour = 2, 18
    scheduled_wh = schedule["p_w"][node][hour]
    dlmp = schedule["dlmp_utoken_per_kwh"][node][hour]
    metered_wh = scheduled_wh - 150  # consumed 150 Wh more than scheduled
    before = chain.balance("utoken", keys[node].pub_hex)
    pool_before = chain.balance("utoken", DSO.pub_hex)
    reading = {
        "duration_s": 3600,
        "net_wh": metered_wh,
        "node": node,
        "round": "r1",
        "start_ms": start + hour * HOUR_MS,
    }
    out = chain.submit(meters[node], "billing.reading", reading)
    chain.produce()
    assert chain.result(out.txid).code == codes.OK, chain.result(out.txid).log
    energy = metered_wh * dlmp / 1000
    penalty = (150 - 50) * 100_000 / 1000
    expected = round(energy) - round(penalty)
    delta = chain.balance("utoken", keys[node].pub_hex) - before
    assert abs(delta - expected) <= 1
    assert chain.balance("utoken", DSO.pub_hex) - pool_before == -delta  # tokens only move
    bill = chain.state(bill_key("r1", node, hour))
    assert bill["penalty_utoken"] == 10_000 and bill["deviation_wh"] == -150
    # bad readings change nothing
    again = chain.submit(meters[node], "billing.reading", reading)
    assert again.code == codes.ALREADY_EXISTS
    outside = chain.submit(
        meters[node], "billing.reading", dict(reading, start_ms=start + 24 * HOUR_MS)
    )
    assert outside.code == codes.INVALID_PAYLOAD
    assert "hour 24 is outside the schedule's horizon" in outside.log
    wrong_meter = chain.submit(meters[1], "billing.reading", dict(reading, start_ms=start))
    assert wrong_meter.code == codes.UNAUTHORIZED and "not its meter" in wrong_meter.log
    chain.produce()
    assert chain.state(bill_key("r1", node, 0)) is None
    assert chain.balance("utoken", keys[node].pub_hex) - before == delta


def test_schedule_command_rejects_bad_input(capsys):
    from gridledger.cli import main

    assert main(["schedule", "nowhere"]) == 2
    assert "unknown feeder 'nowhere'" in capsys.readouterr().err
    assert main(["schedule", "case33bw[:4]", "--validators", "0", "--on-chain"]) == 2
    assert "--validators must be at least 1" in capsys.readouterr().err
    assert main(["schedule", "case33bw[:4]", "--method", "central", "--on-chain"]) == 2
    assert "use --method admm" in capsys.readouterr().err


def test_schedule_command_central_json(capsys):
    import json

    from gridledger.cli import main

    assert main(["schedule", "case33bw[:4]", "--method", "central", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("objective", "iterations", "gap_pct", "primal_residual", "dual_residual",
                "seconds", "relaxation_exact", "dlmp"):  # fmt: skip
        assert key in out
    assert out["relaxation_exact"] is True and out["gap_pct"] == 0.0
    assert out["dispatch"]["feasible"] is True  # the optimum, run through the AC power flow
    assert out["dispatch"]["max_slack_mismatch_mw"] < 1e-6
    # the marginal prices of the optimum as run are its DLMPs (no bus but the root at a limit)
    assert out["dispatch"]["marginal_price"] == pytest.approx(out["dlmp"], abs=2e-3)
    assert set(out["dlmp"]) == {"min", "max", "root"}


@pytest.mark.slow
@pytest.mark.xdist_group("admm_processes")
def test_schedule_on_chain_with_node_and_agent_processes(tmp_path):
    """The real thing: a solo node process, two agent processes over HTTP, the CLI's JSON."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "gridledger.cli", "schedule", "case33bw[:4]", "--on-chain",
         "--max-iter", "6", "--json", "--home", str(tmp_path / "chain")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["on_chain"] and out["iterations"] == 6 and out["status"] == "max_iter"
    # the same iterations off chain (one subproblem per node, as the agents solve them)
    from gridledger.grid.admm import default_options

    feeder = head(case33bw(), 4)
    off = solve_admm(feeder, replace(default_options(6), groups=feeder.n_nodes))
    assert out["primal_residual"] == pytest.approx(off.primal_residual, rel=1e-3)
    # the chain's schedule, costed from its integers, is worth what the off-chain one is
    central_usd = out["central_objective"]
    # (injections on chain are whole watts: ≤ 0.5 W per node and hour at ≤ 100 $/MWh)
    assert out["objective"] == pytest.approx(off.dispatch.cost_usd, abs=4 * 24 * 0.5e-6 * 100)
    assert out["admm_gap_pct"] == pytest.approx(
        100 * (off.objective_usd - central_usd) / central_usd, abs=1e-3
    )
    assert out["dispatch"]["feasible"] is off.dispatch.feasible
    # anyone can replay the aggregator from the node's own database
    from gridledger.chain.store import Store

    store = Store(tmp_path / "chain" / "solo" / "data" / "chain.db")
    rounds = replay(chain_records(store))
    assert len(rounds["day-ahead"]["history"]) == 6
    z = np.array(rounds["day-ahead"]["z"], dtype=float) / SCALE
    np.testing.assert_allclose(z, off.z, atol=1e-4)
    store.close()
    audit = subprocess.run(
        [sys.executable, "-m", "gridledger.cli", "schedule-audit", "--json",
         str(tmp_path / "chain" / "solo" / "data" / "chain.db")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout) == {
        "day-ahead": {"iterations": 6, "matches": True, "status": "max_iter"}
    }


def test_audit_replays_rounds_and_detects_a_tampered_state(tmp_path, feeder):
    import sqlite3

    from gridledger.agents.scheduling import audit_rounds
    from gridledger.chain import encoding

    chain, keys = _chain(tmp_path, feeder)
    open_round(chain, DSO, feeder, "r1", [k.pub_hex for k in keys], replace(OPTIONS, max_iter=2))
    chain.produce()
    _run(chain, [DerAgent(feeder, i, keys[i], "r1") for i in range(feeder.n_nodes)])
    db = tmp_path / "data" / "chain.db"
    assert audit_rounds(str(db)) == {"r1": {"iterations": 2, "matches": True, "status": "max_iter"}}
    z = chain.state(round_key("r1", "z"))
    z[0][0] += 1  # one nano-pu on one flow: a dishonest database
    chain.close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE state SET v=? WHERE k=?", (encoding.encode(z), round_key("r1", "z").encode())
        )
    assert audit_rounds(str(db))["r1"]["matches"] is False


def test_cluster_agents_run_the_same_iterations_as_off_chain_clusters(tmp_path):
    from gridledger.agents.der_agent import ClusterAgent
    from gridledger.grid.admm import tree_clusters

    feeder = head(case33bw(), 8)
    opts = replace(OPTIONS, rho=10.0, max_iter=5, clusters=3)
    chain, keys = _chain(tmp_path, feeder)
    open_round(chain, DSO, feeder, "r1", [k.pub_hex for k in keys], opts)
    chain.produce()
    groups = tree_clusters(feeder, 3)
    assert sorted(i for g in groups for i in g) == list(range(8))
    agents = [ClusterAgent(feeder, g, {i: keys[i] for i in g}, "r1") for g in groups]
    for _ in range(50):
        state = chain.state(round_key("r1", "state"))
        if all(a.done for a in agents if not a.due(state)) and state["status"] != "collecting":
            break
        z, xi = chain.state(round_key("r1", "z")), chain.state(round_key("r1", "xi"))
        for a in agents:
            if a.due(state):
                for key, tx_type, payload in a.local_steps(state, z, xi):
                    assert chain.submit(key, tx_type, payload).ok
        chain.produce()
    assert chain.state(round_key("r1", "state"))["status"] == "max_iter"
    off = solve_admm(feeder, opts)
    np.testing.assert_allclose(
        np.array(chain.state(round_key("r1", "z")), dtype=float) / SCALE, off.z, atol=1e-5
    )
    # copies of a cluster's internal lines agree: only boundary lines carry residual
    parent = [int(p) for p in feeder.parent]
    node = next(k for g in groups for k in g if k and parent[k] in g)
    own = chain.state(round_key("r1", "x", node))["x"][0]  # P_node, the node's own copy
    at_parent = chain.state(round_key("r1", "x", parent[node]))["x"]
    assert at_parent[node_rows(parent, parent[node]).index(node - 1)] == own


@pytest.mark.slow
@pytest.mark.xdist_group("admm_processes")
def test_schedule_on_a_four_validator_bft_network(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "gridledger.cli", "schedule", "case33bw[:4]", "--on-chain",
         "--validators", "4", "--max-iter", "3", "--json", "--home", str(tmp_path / "net")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["validators"] == 4 and out["iterations"] == 3 and out["status"] == "max_iter"
    feeder = head(case33bw(), 4)
    from gridledger.grid.admm import default_options

    off = solve_admm(feeder, replace(default_options(3), groups=feeder.n_nodes))
    assert out["primal_residual"] == pytest.approx(off.primal_residual, rel=1e-3)
    # the chain's schedule, costed from its integers, is worth what the off-chain one is
    central_usd = out["central_objective"]
    # (injections on chain are whole watts: ≤ 0.5 W per node and hour at ≤ 100 $/MWh)
    assert out["objective"] == pytest.approx(off.dispatch.cost_usd, abs=4 * 24 * 0.5e-6 * 100)
    assert out["admm_gap_pct"] == pytest.approx(
        100 * (off.objective_usd - central_usd) / central_usd, abs=1e-3
    )
    assert out["dispatch"]["feasible"] is off.dispatch.feasible
