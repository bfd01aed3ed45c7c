"""``gridledger vpp --on-chain``: a node process and prosumer agent processes run seed 003's VPP;
the JSON's fields against the off-chain ADMM and the chain's own records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gridledger.agents.vpp_chain import PROSUMER_UTOKEN
from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.contracts.vpp import ESCROW, vpp_key
from gridledger.chain.keys import load_key
from gridledger.cli import main
from gridledger.demo.localchain import LocalChain
from gridledger.grid.vpp import generate_profiles, solve_vpp_admm
from gridledger.market.vpp_rules import contract_step


@pytest.mark.slow  # a node, two agent processes, 2 days to ε = 1e-6, then off chain: ≈ 30–50 s
def test_vpp_on_chain_command(tmp_path, capsys):
    home = tmp_path / "vpp"
    argv = ["vpp", "--prosumers", "3", "--days", "2", "--seed", "3", "--json"]
    assert main([*argv, "--on-chain", "--agent-processes", "2", "--home", str(home)]) == 0
    on = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    off = json.loads(capsys.readouterr().out)
    assert on["on_chain"] is True and on["supply_invariant"] is True
    assert on["invariants"]["escrow_left_utoken"] == 0
    # the same iterations as the off-chain ADMM with the contract's integer step, every day
    # (batteries carried over); the float ADMM may stop an iteration or two apart, since the
    # rounding to 1e-9 kWh adds up to ≈ 1e-7 kWh in the error
    exact = solve_vpp_admm(generate_profiles(3, 2, 3), step=contract_step)
    assert on["iterations_per_day"] == [d.iterations for d in exact.days]
    assert np.abs(np.subtract(on["iterations_per_day"], off["iterations_per_day"])).max() <= 5
    assert on["iterations"] == sum(on["iterations_per_day"])
    assert on["residual_kwh"] <= 1e-6
    for name, kwh in off["bought_kwh"].items():
        assert on["bought_kwh"][name] == pytest.approx(kwh, abs=2e-3)
    # paid for the trades: what the contract's rules bill off chain, to rounding per pair-day
    assert on["paid_utoken"] > 0
    assert on["paid_utoken"] == pytest.approx(off["paid_utoken"], abs=3 * 3 * 2)
    # the chain's own records: each settlement pays its bills, balances move by exactly that
    chain = LocalChain(home / "node", (home / "node" / "genesis.json").read_bytes()[:-1], None, 0)
    keys = [load_key(home / "keys" / f"prosumer-{u}.json")[0].pub_hex for u in range(3)]
    net = [0, 0, 0]
    total = 0
    for d in range(2):
        s = chain.state(vpp_key(f"day-{d}", "settlement"))
        assert s["paid"] == chain.state(vpp_key(f"day-{d}", "bills"))
        assert chain.state(vpp_key(f"day-{d}", "state"))["status"] == "settled"
        total += s["paid_utoken"]
        for u in range(3):
            net[u] += sum(s["paid"][v][u] for v in range(3)) - sum(s["paid"][u])
    assert total == on["paid_utoken"] == sum(on["paid_utoken_per_day"])
    for u, k in enumerate(keys):
        assert chain.state_int(balance_key("utoken", k)) == PROSUMER_UTOKEN + net[u]
    assert chain.state_int(balance_key("utoken", ESCROW)) == 0
    chain.close()
