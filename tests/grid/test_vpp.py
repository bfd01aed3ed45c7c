"""Seed 003's VPP: prosumer model, P2P ADMM against the centralized problem, profiles, CSV."""

from __future__ import annotations

import numpy as np
import pytest

from gridledger.grid.vpp import (
    VppError,
    dual_step,
    generate_profiles,
    load_profiles_csv,
    solve_vpp_admm,
    solve_vpp_central_day,
)
from gridledger.market.vpp_rules import SCALE, dual_step_fixed, to_fixed


@pytest.fixture(scope="module")
def profiles():
    return generate_profiles(n_prosumers=4, days=1, seed=11)


@pytest.fixture(scope="module")
def day(profiles):
    return solve_vpp_admm(profiles, rho=0.5, eps_kwh=1e-4, max_iter=300)


def test_admm_matches_the_centralized_cost(profiles, day):
    d = day.days[0]
    assert d.residual_kwh <= 1e-4 and d.iterations < 300
    b0 = np.array([p.battery_initial_kwh for p in profiles])
    central = solve_vpp_central_day(profiles, 0, b0)
    assert d.cost_usd == pytest.approx(central, abs=1e-3 * max(1.0, abs(central)))


def test_trades_are_reciprocal_and_balances_hold(profiles, day):
    trades = day.days[0].trades_kwh
    np.testing.assert_allclose(trades, -trades.transpose(1, 0, 2), atol=1e-12)
    assert np.allclose(np.diagonal(trades, axis1=0, axis2=1), 0)
    # energy traded inside the VPP sums to zero every hour (eq. 2 summed over prosumers)
    np.testing.assert_allclose(trades.sum(axis=(0, 1)), 0, atol=1e-9)
    assert np.abs(trades).max() > 0.05  # they do trade


def test_dual_step_by_hand():
    # u=0 says it buys 1.0 from 1; 1 says it buys 0.5 from 0 (both buying): p' splits the claim
    p = np.zeros((2, 2, 1))
    p[0, 1, 0], p[1, 0, 0] = 1.0, 0.5
    aux, lam, res = dual_step(p, np.zeros_like(p), np.zeros_like(p), rho=1.0)
    assert aux[0, 1, 0] == pytest.approx(0.25) and aux[1, 0, 0] == pytest.approx(-0.25)
    assert lam[0, 1, 0] == pytest.approx(-0.75) and lam[1, 0, 0] == pytest.approx(-0.75)
    # the seed's error: the sum over ordered pairs of ‖p'_uv − p_uv‖
    assert res == pytest.approx(0.75 + 0.75)


def test_integer_dual_step_mirrors_the_float_one():
    rng = np.random.default_rng(5)
    n, horizon, rho = 5, 24, 0.7
    p = rng.normal(0, 1, (n, n, horizon))
    lam = rng.normal(0, 0.1, (n, n, horizon))
    for u in range(n):
        p[u, u] = lam[u, u] = 0
    aux_f, lam_f, res_f = dual_step(p, np.zeros_like(p), lam, rho)
    aux_i, lam_i, res_i = dual_step_fixed(
        to_fixed(p), to_fixed(np.zeros_like(p)), to_fixed(lam), round(rho * SCALE)
    )
    assert np.all(aux_i == -aux_i.transpose(1, 0, 2))  # exactly reciprocal
    np.testing.assert_allclose(aux_i.astype(float) / SCALE, aux_f, atol=2e-9)
    np.testing.assert_allclose(lam_i.astype(float) / SCALE, lam_f, atol=2e-9)
    assert res_i / SCALE == pytest.approx(res_f, rel=1e-6)


def test_generated_profiles_are_seeded_and_plausible():
    a = generate_profiles(10, 7, seed=3)
    b = generate_profiles(10, 7, seed=3)
    assert len(a) == 10 and a[0].solar_kw.shape == (168,)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.inflexible_kw, y.inflexible_kw)
    night = np.arange(168) % 24 < 5
    assert all(p.solar_kw[night].max() == 0 for p in a)
    assert all(p.inflexible_kw.min() > 0 for p in a)
    assert any(p.solar_kw.max() > 0 for p in a) and any(p.solar_kw.max() == 0 for p in a)


def test_profiles_from_csv(tmp_path, profiles):
    path = tmp_path / "profiles.csv"
    lines = ["prosumer,hour,solar_kw,wind_kw,inflexible_kw,flexible_ref_kw"]
    for p in profiles:
        for h in range(24):
            lines.append(
                f"{p.name},{h},{float(p.solar_kw[h])!r},{float(p.wind_kw[h])!r},"
                f"{float(p.inflexible_kw[h])!r},{float(p.flexible_ref_kw[h])!r}"
            )
    path.write_text("\n".join(lines) + "\n")
    loaded = load_profiles_csv(path)
    assert [p.name for p in loaded] == [p.name for p in profiles]
    np.testing.assert_array_equal(loaded[2].solar_kw, profiles[2].solar_kw)
    bad = tmp_path / "bad.csv"
    bad.write_text("prosumer,hour,solar_kw\nA,0,1.0\n")
    with pytest.raises(VppError, match=r"missing columns \['flexible_ref_kw', 'inflexible_kw'"):
        load_profiles_csv(bad)
    gap = tmp_path / "gap.csv"
    gap.write_text("\n".join([lines[0], lines[1], lines[3]]) + "\n")
    with pytest.raises(VppError, match=r"hours are not 0\.\.1"):
        load_profiles_csv(gap)
    neg = tmp_path / "neg.csv"
    neg.write_text(lines[0] + "\n" + "\n".join(f"A,{h},-1,0,1,0" for h in range(24)) + "\n")
    with pytest.raises(VppError, match="prosumer A: solar_kw must be finite and non-negative"):
        load_profiles_csv(neg)


def test_vpp_command(tmp_path, capsys):
    import json

    from gridledger.cli import main

    plot = tmp_path / "trading.png"
    assert main(["vpp", "--prosumers", "3", "--days", "1", "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prosumers"] == 3 and out["days"] == 1 and out["residual_kwh"] <= 1e-6
    assert out["eps_kwh"] == 1e-6 and out["iterations"] == sum(out["iterations_per_day"]) > 1
    assert out["paid_utoken"] > 0 and out["on_chain"] is False
    assert out["traded_kwh"] >= sum(out["bought_kwh"].values()) - 1e-3  # gross ≥ net
    assert sum(out["bought_kwh"].values()) == pytest.approx(sum(out["sold_kwh"].values()), abs=0.01)
    assert plot.stat().st_size > 10_000
    assert main(["vpp", "--prosumers", "1"]) == 2
    assert "--prosumers must be ≥ 2" in capsys.readouterr().err
    assert main(["vpp", "--profiles", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["vpp", "--eps", "0"]) == 2
    assert "--eps must be in (0, 1000] kWh" in capsys.readouterr().err
    assert main(["vpp", "--on-chain", "--agent-processes", "0"]) == 2
    assert "--agent-processes must be ≥ 1" in capsys.readouterr().err
