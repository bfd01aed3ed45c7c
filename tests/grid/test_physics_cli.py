"""``gridledger cases`` and ``gridledger pf`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from gridledger.cli import main
from gridledger.grid.cases import list_cases, load_case
from gridledger.grid.powerflow import run_pf


def test_cases_lists_every_shipped_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases"]) == 0
    out = capsys.readouterr().out
    for name in list_cases():
        assert name in out
    assert main(["cases", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(list_cases())


def test_pf_json_shape_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pf", "microgrid9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"converged", "iterations", "loss_mw", "buses", "lines"} <= set(out)
    assert out["converged"] is True and out["iterations"] >= 1
    assert [b["bus"] for b in out["buses"]] == list(range(1, 10))
    assert set(out["buses"][0]) == {"bus", "vm_pu", "va_deg"}
    line = out["lines"][0]
    assert {"from", "to", "loading_pct", "p_from_mw", "q_from_mvar"} <= set(line)
    ref = run_pf(load_case("microgrid9"))
    assert out["loss_mw"] == pytest.approx(ref.loss_mw)
    assert [b["vm_pu"] for b in out["buses"]] == pytest.approx(list(ref.vm_pu))
    assert [(ln["from"], ln["to"]) for ln in out["lines"]][:2] == [(1, 5), (1, 7)]
    assert out["case"] == "microgrid9"
    assert [g["name"] for g in out["generators"]] == ["GRID", "DG2", "DG3", "DG4"]
    assert out["generators"][1]["p_mw"] == pytest.approx(0.7643)


def test_pf_unrated_lines_have_null_loading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pf", "sce56", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(ln["loading_pct"] is None for ln in out["lines"])


def test_pf_readable_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pf", "ieee9"]) == 0
    out = capsys.readouterr().out
    assert "ieee9: converged" in out and "losses 4.9547" in out
    assert "vm_pu" in out and "loading" in out and "G1@1" in out


def test_pf_unknown_case_exits_2_listing_known(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pf", "ieee10"]) == 2
    err = capsys.readouterr().err
    assert "unknown case 'ieee10'" in err and "microgrid9-islanded" in err and "sce56" in err


def test_pf_non_convergence_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    # Q control with the generators at 0 Mvar cannot carry 200 MVAr at bus 9: voltage collapse.
    assert main(["pf", "ieee9-q200", "--control", "q", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["converged"] is False
    assert "did not converge after 30 iterations" in captured.err


def test_pf_bad_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pf", "ieee9", "--tol", "0"]) == 2
    assert "--tol must be positive" in capsys.readouterr().err


def test_pf_q_limits_flag(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from gridledger.grid.loaders import to_matpower

    net = load_case("ieee9-q200")
    gen = net.gen.copy()
    gen["qmax_mvar"] = 60.0
    path = tmp_path / "limited.m"
    path.write_text(to_matpower(net.with_tables(gen=gen)))
    assert main(["pf", str(path), "--json"]) == 0
    free = json.loads(capsys.readouterr().out)
    assert main(["pf", str(path), "--json", "--q-limits"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert free["generators"][1]["q_mvar"] > 60.0
    assert held["generators"][1]["q_mvar"] == pytest.approx(60.0, abs=1e-6)
