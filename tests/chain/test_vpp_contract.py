"""Seed 003's VPP with the dual step on a real ledger app, against the off-chain ADMM."""

from __future__ import annotations

import numpy as np
import pytest

from gridledger.agents.der_agent import admm_genesis, agent_keys
from gridledger.agents.vpp_agent import VppAgent, open_vpp_round
from gridledger.chain import codes
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain
from gridledger.grid.vpp import generate_profiles, solve_vpp_admm
from gridledger.market.vpp_rules import SCALE, dual_step_fixed

T0 = 1_700_000_000_000
DSO = KeyPair.from_seed(b"o" * 32)
VALIDATOR = KeyPair.from_seed(b"w" * 32)
RHO, EPS, MAX_ITER = 0.5, 1e-3, 150


def fixed_step(p, aux, lam, rho):
    """The contract's integer step, seen from floats (for the off-chain reference)."""

    def fx(a):
        return np.vectorize(lambda v: round(v * SCALE), otypes=[object])(a)

    a, lm, r = dual_step_fixed(fx(p), fx(aux), fx(lam), round(rho * SCALE))
    return a.astype(float) / SCALE, lm.astype(float) / SCALE, r / SCALE


@pytest.fixture(scope="module")
def profiles():
    return generate_profiles(n_prosumers=3, days=1, seed=21)


def _chain(tmp_path, n):
    keys = agent_keys("vpp", n)
    chain = LocalChain(tmp_path, admm_genesis("vpp-test", DSO, VALIDATOR, keys, T0), VALIDATOR, T0)
    open_vpp_round(chain, DSO, "d1", [k.pub_hex for k in keys], RHO, EPS, MAX_ITER)
    chain.produce()
    return chain, keys


def test_on_chain_dual_step_reproduces_the_off_chain_admm(tmp_path, profiles):
    chain, keys = _chain(tmp_path, len(profiles))
    agents = [VppAgent(profiles, u, keys[u], "d1") for u in range(len(profiles))]
    for _ in range(3 * MAX_ITER):
        if all(a.done for a in agents):
            break
        for a in agents:
            a.step(chain)
        chain.produce()
    st = chain.state("vpp/d1/state")
    assert st["status"] == "converged"
    off = solve_vpp_admm(profiles, rho=RHO, eps_kwh=EPS, max_iter=MAX_ITER, step=fixed_step)
    assert off.days[0].iterations == st["k"]
    aux = np.array(chain.state("vpp/d1/aux"), dtype=float) / SCALE
    np.testing.assert_allclose(aux, off.days[0].trades_kwh, atol=1e-6)
    assert np.all(
        np.array(chain.state("vpp/d1/aux"))
        == -np.array(chain.state("vpp/d1/aux")).transpose(1, 0, 2)
    )


def test_bad_vpp_submissions(tmp_path, profiles):
    chain, keys = _chain(tmp_path, len(profiles))
    rows = [[0] * 24 for _ in range(len(profiles) - 1)]
    wrong_key = chain.submit(keys[0], "vpp.submit", {"k": 1, "p": rows, "round": "d1", "u": 1})
    assert wrong_key.code == codes.UNAUTHORIZED and "trades of prosumer 1" in wrong_key.log
    wrong_k = chain.submit(keys[0], "vpp.submit", {"k": 3, "p": rows, "round": "d1", "u": 0})
    assert wrong_k.code == codes.INVALID_PAYLOAD and "iteration 3; round d1 is at 1" in wrong_k.log
    short = chain.submit(keys[0], "vpp.submit", {"k": 1, "p": rows[:1], "round": "d1", "u": 0})
    assert short.code == codes.INVALID_PAYLOAD and "must be 2 rows of 24" in short.log
    chain.produce()
    assert chain.state("vpp/d1/state")["submitted"] == []
