"""Seed 003's VPP on a real ledger app: the dual step against the off-chain ADMM and a
centralized solve, the payments by hand, and every abuse we could think of."""

from __future__ import annotations

import numpy as np
import pytest

from gridledger.agents.der_agent import admm_genesis, agent_keys
from gridledger.agents.vpp_agent import VppAgent, open_vpp_round, round_payload
from gridledger.chain import codes
from gridledger.chain.contracts.tokens import balance_key
from gridledger.chain.contracts.vpp import ESCROW, vpp_key
from gridledger.chain.encoding import EncodingError
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain
from gridledger.grid.vpp import generate_profiles, solve_vpp_admm, solve_vpp_central_day
from gridledger.market.vpp_rules import SCALE, contract_step

T0 = 1_700_000_000_000
DSO = KeyPair.from_seed(b"o" * 32)
VALIDATOR = KeyPair.from_seed(b"w" * 32)
OUTSIDER = KeyPair.from_seed(b"x" * 32)  # not a member of the chain
RHO, EPS, MAX_ITER = 0.5, 1e-6, 1000
START_UTOKEN = 10**9
KWH = SCALE  # 1 kWh in the contract's units


@pytest.fixture(scope="module")
def profiles():
    return generate_profiles(n_prosumers=3, days=1, seed=21)


def _chain(tmp_path, n, extra_members=0):
    keys = agent_keys("vpp", n + extra_members)
    genesis = admm_genesis("vpp-test", DSO, VALIDATOR, keys, T0, agent_utoken=START_UTOKEN)
    return LocalChain(tmp_path, genesis, VALIDATOR, T0), keys


def _open(chain, keys, n, **kw):
    args = dict(rho=RHO, eps_kwh=EPS, max_iter=MAX_ITER, horizon=24, timeout_ms=60_000)
    args.update(kw)
    payload = round_payload("d1", [k.pub_hex for k in keys[:n]], [20.0] * n, **args)
    out = chain.submit(DSO, "vpp.open", payload)
    assert out.ok, out.log
    chain.produce()


def _bal(chain, key):
    return chain.balance("utoken", key.pub_hex)


def _supply_ok(chain):
    bal = sum(chain.state_int(k) for k in chain.keys_with_prefix("bal/utoken/"))
    return bal == chain.state_int("supply/utoken")


@pytest.mark.slow  # two ADMM runs to ε = 1e-6 and a central solve: ≈ 20–50 s
def test_on_chain_round_equals_the_off_chain_admm_and_the_central_optimum(tmp_path, profiles):
    n = len(profiles)
    chain, keys = _chain(tmp_path, n)
    open_vpp_round(chain, DSO, "d1", [k.pub_hex for k in keys], RHO, EPS, MAX_ITER)
    chain.produce()
    agents = [VppAgent(profiles, u, keys[u], "d1") for u in range(n)]
    for _ in range(3 * MAX_ITER):
        if chain.state(vpp_key("d1", "state"))["status"] == "converged" and all(
            a.accepted for a in agents
        ):
            break
        for a in agents:
            a.step(chain)
        chain.produce()
    st = chain.state(vpp_key("d1", "state"))
    assert st["status"] == "converged" and st["history"][-1][1] <= EPS * SCALE
    # the same iterations as the off-chain ADMM with the contract's integer step
    off = solve_vpp_admm(profiles, rho=RHO, eps_kwh=EPS, max_iter=MAX_ITER, step=contract_step)
    assert off.days[0].iterations == st["k"] == len(st["history"])
    aux_int = np.array(chain.state(vpp_key("d1", "aux")), dtype=object)
    aux = aux_int.astype(float) / SCALE
    np.testing.assert_allclose(aux, off.days[0].trades_kwh, atol=1e-6)
    assert np.all(aux_int == -aux_int.transpose(1, 0, 2))  # exactly reciprocal
    # and the centralized problem (cvxpy, one solve): the prosumers' costs at the chain's
    # agreed trades are the optimum
    b0 = np.array([p.battery_initial_kwh for p in profiles])
    central = solve_vpp_central_day(profiles, 0, b0)
    chain_cost = sum(float(a.model.cost.value) for a in agents)
    assert chain_cost == pytest.approx(central, abs=1e-4)
    assert np.abs(aux).max() > 0.05  # they do trade
    # settle: every buyer pays its bill, the escrow empties, the supply holds
    before = [_bal(chain, k) for k in keys]
    out = chain.submit(DSO, "vpp.settle", {"round": "d1"})
    assert out.ok, out.log
    chain.produce()
    bills = chain.state(vpp_key("d1", "bills"))
    settlement = chain.state(vpp_key("d1", "settlement"))
    assert settlement["paid"] == bills and settlement["paid_utoken"] == sum(map(sum, bills)) > 0
    for u, k in enumerate(keys):
        escrow = chain.state(vpp_key("d1", f"accept/{u}"))["escrow_utoken"]
        net = sum(bills[v][u] for v in range(n)) - sum(bills[u])
        assert _bal(chain, k) == before[u] + escrow + net
    assert chain.balance("utoken", ESCROW) == 0 and _supply_ok(chain)


def _submit(chain, key, u, k, rows, rid="d1"):
    return chain.submit(key, "vpp.submit", {"k": k, "p": rows, "round": rid, "u": u})


def _two_prosumer_round(tmp_path, eps_kwh, max_price_usd=0.50, extra_members=0):
    """ρ = 1 $/kWh², one hour: prosumer 0 asks to buy 1 kWh from 1, prosumer 1 offers 0.5."""
    from gridledger.grid.vpp import VppPrices

    chain, keys = _chain(tmp_path, 2, extra_members)
    # the cap is α + β: here α alone
    prices = VppPrices(
        grid_usd_per_kwh=max_price_usd, peak_usd_per_kw_day=0.0, p2p_usd_per_kwh=0.12
    )
    _open(chain, keys, 2, rho=1.0, eps_kwh=eps_kwh, horizon=1, prices=prices)
    assert _submit(chain, keys[0], 0, 1, [[KWH]]).ok
    assert _submit(chain, keys[1], 1, 1, [[-KWH // 2]]).ok
    chain.produce()
    return chain, keys


def test_payments_by_hand_two_prosumers(tmp_path):
    chain, keys = _two_prosumer_round(tmp_path, eps_kwh=1e-6)
    # eq. 5 by hand: p'_01 = (1 − (−0.5))/2 = 0.75, λ_01 = λ_10 = 1·(0.75 − 1) = −0.25 $/kWh,
    # error |0.75 − 1| + |−0.75 + 0.5| = 0.5 kWh: not converged
    assert chain.state(vpp_key("d1", "aux")) == [[[0], [750_000_000]], [[-750_000_000], [0]]]
    assert chain.state(vpp_key("d1", "lam")) == [[[0], [-250_000_000]], [[-250_000_000], [0]]]
    st = chain.state(vpp_key("d1", "state"))
    assert st["status"] == "collecting" and st["history"] == [[1, 500_000_000]]
    # both move to 0.75: error 0, converged; the price is π_P2P − λ = 0.12 + 0.25 = 0.37 $/kWh
    assert _submit(chain, keys[0], 0, 2, [[3 * KWH // 4]]).ok
    assert _submit(chain, keys[1], 1, 2, [[-3 * KWH // 4]]).ok
    chain.produce()
    assert chain.state(vpp_key("d1", "state"))["status"] == "converged"
    # 0.75 kWh × 370 000 utoken/kWh = 277 500 utoken owed by 0 to 1
    assert chain.state(vpp_key("d1", "bills")) == [[0, 277_500], [0, 0]]
    stingy = chain.submit(keys[0], "vpp.accept", {"max_pay_utoken": 277_499, "round": "d1", "u": 0})
    assert stingy.code == codes.INVALID_PAYLOAD and "owes 277500 utoken" in stingy.log
    assert chain.submit(
        keys[0], "vpp.accept", {"max_pay_utoken": 300_000, "round": "d1", "u": 0}
    ).ok
    assert chain.submit(keys[1], "vpp.accept", {"max_pay_utoken": 0, "round": "d1", "u": 1}).ok
    chain.produce()
    assert chain.balance("utoken", ESCROW) == 277_500  # the bill, not the most it would pay
    assert chain.submit(keys[1], "vpp.settle", {"round": "d1"}).ok
    chain.produce()
    assert _bal(chain, keys[0]) == START_UTOKEN - 277_500
    assert _bal(chain, keys[1]) == START_UTOKEN + 277_500
    assert chain.state(vpp_key("d1", "settlement"))["refund"] == [0, 0]
    assert chain.balance("utoken", ESCROW) == 0 and _supply_ok(chain)
    # settlement runs once: a second one would pay the bill again
    again = chain.submit(keys[1], "vpp.settle", {"round": "d1"})
    assert again.code == codes.INVALID_PAYLOAD and "is settled" in again.log
    assert _bal(chain, keys[1]) == START_UTOKEN + 277_500


def test_nobody_pays_for_more_than_both_sides_agreed(tmp_path):
    # a loose ε (1 kWh) stops at iteration 1 with p'_01 = 0.75 while the seller offered 0.5:
    # the bill is 0.5 kWh at the cap of 0.20 $/kWh (the price 0.37 is above it) = 100 000
    chain, keys = _two_prosumer_round(tmp_path, eps_kwh=1.0, max_price_usd=0.20)
    assert chain.state(vpp_key("d1", "state"))["status"] == "converged"
    assert chain.state(vpp_key("d1", "bills")) == [[0, 100_000], [0, 0]]
    # a buyer that will not pay its whole bill cannot accept (and so is not paid for either)
    short = chain.submit(keys[0], "vpp.accept", {"max_pay_utoken": 60_000, "round": "d1", "u": 0})
    assert short.code == codes.INVALID_PAYLOAD and "more than max_pay_utoken 60000" in short.log
    assert chain.submit(keys[0], "vpp.accept", {"max_pay_utoken": 10**6, "round": "d1", "u": 0}).ok
    assert chain.submit(keys[1], "vpp.accept", {"max_pay_utoken": 0, "round": "d1", "u": 1}).ok
    chain.produce()
    assert chain.submit(DSO, "vpp.settle", {"round": "d1"}).ok
    chain.produce()
    # it named 1 000 000 as its most; it paid its bill, 100 000
    assert _bal(chain, keys[0]) == START_UTOKEN - 100_000
    assert _bal(chain, keys[1]) == START_UTOKEN + 100_000
    assert chain.balance("utoken", ESCROW) == 0 and _supply_ok(chain)


def test_a_seller_who_never_accepts_is_not_paid_and_the_buyer_gets_its_escrow_back(tmp_path):
    chain, keys = _two_prosumer_round(tmp_path, eps_kwh=1.0)
    # 0.5 kWh at 0.37 $/kWh (the cap is 0.50 here) = 185 000 utoken, escrowed
    assert chain.submit(
        keys[0], "vpp.accept", {"max_pay_utoken": 200_000, "round": "d1", "u": 0}
    ).ok
    chain.produce()
    assert chain.balance("utoken", ESCROW) == 185_000
    early = chain.submit(DSO, "vpp.settle", {"round": "d1"})
    assert early.code == codes.INVALID_PAYLOAD and "prosumers [1] have not accepted" in early.log
    deadline = chain.state(vpp_key("d1", "state"))["accept_deadline_ms"]
    chain.produce(deadline + 1)
    late = chain.submit(keys[1], "vpp.accept", {"max_pay_utoken": 0, "round": "d1", "u": 1})
    assert late.code == codes.INVALID_PAYLOAD and "acceptance of round d1 closed" in late.log
    assert chain.submit(DSO, "vpp.settle", {"round": "d1"}).ok
    chain.produce()
    assert _bal(chain, keys[0]) == START_UTOKEN and _bal(chain, keys[1]) == START_UTOKEN
    assert chain.state(vpp_key("d1", "settlement"))["paid_utoken"] == 0 and _supply_ok(chain)


def test_acceptance_abuse(tmp_path):
    chain, keys = _two_prosumer_round(tmp_path, eps_kwh=1.0)
    other = chain.submit(keys[1], "vpp.accept", {"max_pay_utoken": 0, "round": "d1", "u": 0})
    assert other.code == codes.UNAUTHORIZED and "acceptance of prosumer 0" in other.log
    # a buyer whose balance cannot cover its bill (185 000) cannot accept
    gone = {"amount": START_UTOKEN - 1000, "denom": "utoken", "to": DSO.pub_hex}
    assert chain.submit(keys[0], "token.transfer", gone).ok
    poor = chain.submit(keys[0], "vpp.accept", {"max_pay_utoken": 10**6, "round": "d1", "u": 0})
    assert poor.code == codes.INSUFFICIENT_FUNDS
    assert chain.submit(keys[1], "vpp.accept", {"max_pay_utoken": 5, "round": "d1", "u": 1}).ok
    chain.produce()
    twice = chain.submit(keys[1], "vpp.accept", {"max_pay_utoken": 5, "round": "d1", "u": 1})
    assert twice.code == codes.ALREADY_EXISTS
    assert chain.balance("utoken", ESCROW) == 0  # the seller owes nothing: nothing escrowed
    assert chain.state(vpp_key("d1", "accept/0")) is None


def test_submission_abuse(tmp_path):
    chain, keys = _chain(tmp_path, 3, extra_members=1)
    _open(chain, keys, 3, horizon=2)
    rows = [[0, 0], [0, 0]]
    # a non-member cannot send anything; a member prosumer outside the round cannot either
    outsider = chain.submit(OUTSIDER, "vpp.submit", {"k": 1, "p": rows, "round": "d1", "u": 0})
    assert outsider.code == codes.NOT_MEMBER, outsider.log
    stranger = _submit(chain, keys[3], 0, 1, rows)
    assert stranger.code == codes.UNAUTHORIZED and "trades of prosumer 0" in stranger.log
    wrong_key = _submit(chain, keys[0], 1, 1, rows)
    assert wrong_key.code == codes.UNAUTHORIZED and "trades of prosumer 1" in wrong_key.log
    # out of bounds: one trade beyond the 20 kW connection, or two that together exceed it
    big = _submit(chain, keys[0], 0, 1, [[21 * KWH, 0], [0, 0]])
    assert big.code == codes.INVALID_PAYLOAD and "beyond its power bound" in big.log
    net = _submit(chain, keys[0], 0, 1, [[0, 15 * KWH], [0, 15 * KWH]])
    assert net.code == codes.INVALID_PAYLOAD and "net trade 30000000000 at hour 1" in net.log
    short = _submit(chain, keys[0], 0, 1, rows[:1])
    assert short.code == codes.INVALID_PAYLOAD and "must be 2 rows of 2 integers" in short.log
    with pytest.raises(EncodingError, match="float cannot be encoded"):
        _submit(chain, keys[0], 0, 1, [[0.5, 0], [0, 0]])  # integers only, even to sign
    chain.produce()
    assert chain.state(vpp_key("d1", "state"))["submitted"] == []
    assert chain.state(vpp_key("d1", "p/0")) is None
    # iteration 1, then a replay of iteration 1 in iteration 2
    first = [_submit(chain, keys[u], u, 1, [[u * KWH // 10, 0], [0, 0]]) for u in range(3)]
    assert all(o.ok for o in first)
    chain.produce()
    assert chain.state(vpp_key("d1", "state"))["k"] == 2
    replay = _submit(chain, keys[0], 0, 1, [[0, 0], [0, 0]])
    assert replay.code == codes.INVALID_PAYLOAD and "iteration 1; round d1 is at 2" in replay.log
    # the very same signed bytes again: refused by the sequence number
    raw = chain.blocks[-1].txs[0]
    assert not chain.mempool.add(raw).ok
    assert _submit(chain, keys[1], 1, 2, rows).ok
    chain.produce()
    double = _submit(chain, keys[1], 1, 2, rows)
    assert double.code == codes.ALREADY_EXISTS
    # accepting or settling a round that has not converged
    early = chain.submit(keys[0], "vpp.accept", {"max_pay_utoken": 0, "round": "d1", "u": 0})
    assert early.code == codes.INVALID_PAYLOAD and "only a converged round" in early.log
    assert chain.submit(DSO, "vpp.settle", {"round": "d1"}).code == codes.INVALID_PAYLOAD
    # the deadline passes: anyone closes the iteration, nobody submits afterwards
    st = chain.state(vpp_key("d1", "state"))
    chain.produce(st["deadline_ms"] + 1)
    late = _submit(chain, keys[0], 0, 2, rows)
    assert late.code == codes.INVALID_PAYLOAD and "closed at" in late.log
    assert chain.submit(keys[2], "vpp.timeout", {"round": "d1"}).ok
    chain.produce()
    st = chain.state(vpp_key("d1", "state"))
    assert st["status"] == "timed_out" and st["missing"] == [0, 2]
    assert chain.submit(DSO, "vpp.settle", {"round": "d1"}).code == codes.INVALID_PAYLOAD


def test_who_may_open_and_how_big(tmp_path):
    chain, keys = _chain(tmp_path, 3)
    pubs = [k.pub_hex for k in keys]
    by_prosumer = chain.submit(keys[0], "vpp.open", round_payload("d1", pubs, [20.0] * 3))
    assert by_prosumer.code == codes.ROLE_NOT_ALLOWED and "may not send vpp.open" in by_prosumer.log
    huge = round_payload("d1", pubs * 20, [20.0] * 60, horizon=168)
    assert "prosumers² × horizon must be ≤ 100000" in chain.submit(DSO, "vpp.open", huge).log
    dup = round_payload("d1", [pubs[0], pubs[0]], [20.0] * 2)
    assert "listed for two prosumers" in chain.submit(DSO, "vpp.open", dup).log
    no_bound = round_payload("d1", pubs, [20.0] * 2)
    assert (
        "p_max must list one power bound per prosumer"
        in chain.submit(DSO, "vpp.open", no_bound).log
    )
    pricey = round_payload("d1", pubs, [20.0] * 3)
    pricey["price_utoken_per_kwh"] = pricey["max_price_utoken_per_kwh"] + 1
    assert "price_utoken_per_kwh must be in" in chain.submit(DSO, "vpp.open", pricey).log
    chain.produce()
    assert chain.state(vpp_key("d1", "config")) is None
    assert chain.state_int(balance_key("utoken", ESCROW)) == 0
