"""``gridledger ropf`` and ``gridledger validate`` from the command line."""

from __future__ import annotations

import json

import pytest
import yaml

from gridledger.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ropf_json(capsys):
    code, out, _ = run(capsys, "ropf", "microgrid9", "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) >= {"method", "loss_before_mw", "loss_after_mw", "setpoints", "feasible",
                      "evaluations", "seconds"}  # fmt: skip
    assert d["method"] == "exact" and d["feasible"]
    assert d["loss_after_mw"] < d["loss_before_mw"]
    assert set(d["setpoints"]) == {"DG2:q_mvar", "DG3:q_mvar", "DG4:q_mvar"}


def test_ropf_table_and_seeded_search(capsys):
    code, out, _ = run(capsys, "ropf", "ieee9", "--method", "de", "--seed", "2")
    assert code == 0 and "losses after" in out and "G2@2:vm_pu" in out


def test_ropf_bad_inputs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ropf", "ieee9", "--method", "pso"])
    assert exc.value.code == 2
    code, _, err = run(capsys, "ropf", "nosuch")
    assert code == 2 and "unknown case 'nosuch'" in err
    code, _, err = run(capsys, "ropf", "case33bw")
    assert code == 2 and "nothing to optimize" in err
    code, _, err = run(capsys, "ropf", "ieee9", "--vmin", "1.1", "--vmax", "0.9")
    assert code == 2 and "vmin_pu < vmax_pu" in err


def test_validate_json(capsys):
    code, out, _ = run(capsys, "validate", "seed000_case1", "--json")
    assert code == 0
    certs = json.loads(out)["certificates"]
    assert [c["interval"] for c in certs] == ["t1-t2", "t2-t3", "t3-t4"]
    for c in certs:
        assert set(c) >= {"interval", "loss_without_ropf_kw", "loss_with_ropf_kw", "trades",
                          "regulators", "feasible", "reasons"}  # fmt: skip
        assert set(c["trades"][0]) >= {"id", "loss_share_kw"}
        assert set(c["regulators"][0]) >= {"node", "q_kvar", "delta_q_kvar", "delta_pq_kw",
                                           "remuneration_utoken", "remuneration"}  # fmt: skip
        for reg in c["regulators"]:
            assert reg["remuneration"] == reg["remuneration_utoken"]


def test_validate_tables_and_rejection(capsys, tmp_path):
    code, out, _ = run(capsys, "validate", "seed000_case2")
    assert code == 0 and out.count("verdict: FEASIBLE") == 3
    scenario = {
        "name": "too-much",
        "case": "microgrid9",
        "control": "q",
        "times": {"t1": "2026-01-01T10:00:00Z", "t2": "2026-01-01T10:15:00Z"},
        "trades": [{"id": "x", "seller": "GRID", "buyer_bus": 9, "power_kw": 6000,
                    "start": "t1", "end": "t2"}],
    }  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0 and "REJECTED" in out and "line limit at line 1-2" in out


def test_validate_bad_inputs(capsys, tmp_path):
    code, _, err = run(capsys, "validate", "nosuch")
    assert code == 2 and "no shipped scenario" in err
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "n", "case": "microgrid9",
             "trades": [{"id": "x", "seller": "DG2", "buyer_bus": 99, "power_kw": 1,
                         "start": "2026-01-01T10:00:00Z", "end": "2026-01-01T10:15:00Z"}]}
        )
    )  # fmt: skip
    code, _, err = run(capsys, "validate", str(path))
    assert code == 2 and "buyer_bus 99 is not a bus of microgrid9" in err


def test_ropf_reference_voltage_free_or_fixed(capsys):
    code, out, _ = run(capsys, "ropf", "microgrid9-islanded", "--json")
    free = json.loads(out)
    code2, out2, _ = run(capsys, "ropf", "microgrid9-islanded", "--slack-vm", "fixed", "--json")
    fixed = json.loads(out2)
    assert code == code2 == 0
    assert "DG2:vm_pu" in free["setpoints"] and "DG2:vm_pu" not in fixed["setpoints"]
    assert free["loss_after_mw"] < fixed["loss_after_mw"]
