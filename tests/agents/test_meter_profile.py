"""Meter readings from a measured CSV profile: posted per ended slot, signed by each meter,
resumed from the chain after a restart; bad profiles are refused naming the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridledger.agents.meter_profile import ProfileError, ProfileMeter, read_profile
from gridledger.chain.genesis import make_genesis
from gridledger.chain.keys import KeyPair
from gridledger.demo.localchain import LocalChain

SLOT = 900_000
T = 1_800_000_000_000 // SLOT * SLOT  # 2027-01-15T08:00:00Z
CONTRACTS = ["gridledger.chain.contracts.market", "gridledger.chain.contracts.settlement"]
CSV = """timestamp,pv14,house12
2027-01-15T08:00:00Z,-1.25,0.5
2027-01-15T08:15:00Z,-2,0.75
2027-01-15T08:30:00+00:00,0.25,1
"""


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(name.encode().ljust(32, b"\0"))


@pytest.fixture
def chain(tmp_path: Path):
    prosumers = {"pv14": 14, "house12": 12}
    val, dso = key("val"), key("dso")
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "dso"}] + [
        {"pub_key": key(n).pub_hex, "role": "prosumer", "name": n, "bus": b}
        for n, b in prosumers.items()
    ]
    c = LocalChain(
        tmp_path / "home",
        make_genesis("meters", T - SLOT, [(val.pub_hex, 1)], members, [], CONTRACTS),
        val,
        T - SLOT,
    )
    for n in prosumers:
        c.submit(dso, "member.bind_meter", {"meter": key(f"m-{n}").pub_hex,
                                            "prosumer": key(n).pub_hex})  # fmt: skip
    c.produce(T - SLOT + 1)
    yield c
    c.close()


def _meters(path: Path) -> list[ProfileMeter]:
    p = read_profile(path, SLOT)
    return [ProfileMeter(n, key(f"m-{n}"), p.starts_ms, v, SLOT) for n, v in p.kwh.items()]


def test_readings_posted_per_ended_slot_and_resumed_after_restart(chain, tmp_path) -> None:
    path = tmp_path / "profile.csv"
    path.write_text(CSV)
    meters = _meters(path)
    assert [m.step(chain) for m in meters] == [0, 0]  # no slot has ended yet
    chain.produce(T + 2 * SLOT)  # two slots over
    assert [m.step(chain) for m in meters] == [2, 2]
    chain.produce(T + 2 * SLOT + 1)
    restarted = _meters(path)  # a fresh process: what is on chain is not posted again
    assert [m.step(chain) for m in restarted] == [0, 0]
    chain.produce(T + 3 * SLOT)
    assert [m.step(chain) for m in restarted] == [1, 1]
    chain.produce(T + 3 * SLOT + 1)
    pv = chain.state(f"meter/{key('m-pv14').pub_hex}")
    house = chain.state(f"meter/{key('m-house12').pub_hex}")
    assert (pv["export_wh"], pv["import_wh"], pv["end_ms"]) == (3250, 250, T + 3 * SLOT)
    assert (house["export_wh"], house["import_wh"]) == (0, 2250)
    assert all(m.done(chain) for m in restarted)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,a\n2027-01-15T08:00:00Z,1\n2027-01-15T08:30:00Z,1\n",
         r":3: gap before 2027-01-15T08:30:00Z: 1 slot\(s\) of 900 s missing"),
        ("timestamp,a\n2027-01-15T08:00:00Z,1\n2027-01-15T08:00:00Z,2\n",
         ":3: duplicate timestamp"),
        ("timestamp,a\n2027-01-15T08:15:00Z,1\n2027-01-15T08:00:00Z,2\n", ":3: .* goes back"),
        ("timestamp,a\n2027-01-15T09:00:00+01:00,1\n", "must be in UTC"),
        ("timestamp,a\n2027-01-15T08:05:00Z,1\n", "is not the start of a 900 s slot"),
        ("timestamp,a\n2027-01-15T08:00:00Z,lots\n", "a: 'lots' is not a number of kWh"),
        ("timestamp,a,a\n2027-01-15T08:00:00Z,1,2\n", "each name once"),
        ("time,a\n", "first column must be 'timestamp'"),
        ("timestamp,a\n", "no readings"),
    ],
)  # fmt: skip
def test_bad_profiles_are_refused_naming_the_line(tmp_path, text, message) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        read_profile(path, SLOT)


FINE = """timestamp,pv14
2027-01-15T08:00:00Z,-0.5
2027-01-15T08:05:00Z,-0.25
2027-01-15T08:10:00Z,-0.0004
2027-01-15T08:15:00Z,0.1
2027-01-15T08:20:00Z,0.2
2027-01-15T08:25:00Z,0.3
"""


def test_a_finer_profile_sums_its_samples_per_slot(tmp_path) -> None:
    path = tmp_path / "fine.csv"
    path.write_text(FINE)
    p = read_profile(path, SLOT, sample_ms=300_000)
    assert p.starts_ms == [T, T + SLOT] and p.sample_ms == 300_000
    assert p.samples_kwh["pv14"] == [[-0.5, -0.25, -0.0004], [0.1, 0.2, 0.3]]
    # each sample is posted in whole Wh (-0.4 Wh is 0), the slot is their sum
    assert p.kwh["pv14"] == [-0.75, 0.6]


@pytest.mark.parametrize(
    ("text", "sample_ms", "message"),
    [
        (FINE, 420_000, "samples of 420000 ms do not divide the 900000 ms slot"),
        (FINE.replace("08:00:00Z,-0.5", "07:55:00Z,-0.5"), 300_000,
         ":2: .* is not the start of a 900 s slot"),
        (FINE.replace("08:10:00Z", "08:11:00Z"), 300_000, ":4: .* is not the start of a 300 s"),
        (FINE.replace("08:10:00Z", "08:15:00Z"), 300_000,
         r":4: gap before 2027-01-15T08:15:00Z: 1 sample\(s\) of 300 s missing"),
        (FINE.rsplit("2027", 1)[0], 300_000, "the last slot has 2 of its 3 samples"),
    ],
)  # fmt: skip
def test_bad_fine_profiles_are_refused(tmp_path, text, sample_ms, message) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        read_profile(path, SLOT, sample_ms=sample_ms)


@pytest.mark.xdist_group("node-process")
def test_meter_serve_against_a_node_process(tmp_path, capsys) -> None:
    """``gridledger meter serve`` posts a 2 s-slot profile to a real node and exits when every
    reading is on chain; a profile with a gap exits 2 and posts nothing."""
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime

    from gridledger.agents.runner import HttpChain
    from gridledger.chain.keys import save_key
    from gridledger.cli import main
    from gridledger.node.home import NodeConfig

    val, dso, pv, meter = KeyPair.generate(), KeyPair.generate(), key("pv"), key("m-pv")
    house, load_meter = key("house"), key("m-house")
    home = tmp_path / "node"
    save_key(home / "keys" / "validator.json", val, "validator")
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"},
               {"pub_key": pv.pub_hex, "role": "prosumer", "name": "pv", "bus": 14},
               {"pub_key": house.pub_hex, "role": "prosumer", "name": "house",
                "bus": 5}]  # fmt: skip
    genesis = make_genesis("meter-cli", time.time_ns() // 10**6, [(val.pub_hex, 1)], members,
                           [], CONTRACTS)  # fmt: skip
    (home / "genesis.json").write_bytes(genesis + b"\n")
    NodeConfig("meter-cli", api="127.0.0.1:0", block_interval_ms=100,
               synchronous="NORMAL").save(home)  # fmt: skip
    node = subprocess.Popen(
        [sys.executable, "-m", "gridledger.demo.node_proc", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "node.addr").exists():
            assert node.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = (home / "node.addr").read_text().strip()
        chain = HttpChain(url)
        try:
            # committed before `meter serve` reads the slot length (submit only admits)
            sent = [chain.submit(dso, "market.configure", {"slot_ms": 2000})]
            sent.append(chain.submit(dso, "member.bind_meter",
                                     {"meter": meter.pub_hex, "prosumer": pv.pub_hex}))  # fmt: skip
            bind = {"meter": load_meter.pub_hex, "prosumer": house.pub_hex}
            sent.append(chain.submit(dso, "member.bind_meter", bind))
            assert all(out.ok and chain.wait_committed(out.txid).ok for out in sent)
            first = (chain.time_ms() // 2000 + 2) * 2000

            def stamp(ms: int) -> str:
                return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

            keys = tmp_path / "keys"
            save_key(keys / "pv14.json", meter, "meter")
            gap = tmp_path / "gap.csv"
            gap.write_text(f"timestamp,pv14\n{stamp(first)},-1\n{stamp(first + 4000)},-1\n")
            assert main(["meter", "serve", "--node", url, "--profile", str(gap), "--keys",
                         str(keys)]) == 2  # fmt: skip
            assert "gap before" in capsys.readouterr().err
            good = tmp_path / "profile.csv"
            rows = "".join(f"{stamp(first + 2000 * i)},{v}\n" for i, v in enumerate([-1, -2, 0.5]))
            good.write_text("timestamp,pv14\n" + rows)
            assert main(["meter", "serve", "--node", url, "--profile", str(good), "--keys",
                         str(keys)]) == 0  # fmt: skip
            # the grid's profiles: key files named like microgrid9's elements
            grid_keys = tmp_path / "grid-keys"
            save_key(grid_keys / "L5.json", load_meter, "meter")
            assert main(["meter", "serve", "--node", url, "--profiles", "grid", "--keys",
                         str(grid_keys)]) == 2  # fmt: skip
            assert "--profiles grid needs --grid and --from" in capsys.readouterr().err
            save_key(grid_keys / "house7.json", KeyPair.generate(), "meter")
            grid_args = ["meter", "serve", "--node", url, "--profiles", "grid", "--grid",
                         "microgrid9", "--from", stamp(first), "--slots", "3", "--keys",
                         str(grid_keys)]  # fmt: skip
            assert main(grid_args) == 2
            assert "meter 'house7': microgrid9 has no load" in capsys.readouterr().err
            (grid_keys / "house7.json").unlink()
            assert main(grid_args) == 0
            time.sleep(0.3)  # the last reading's block
            on_chain = chain.state(f"meter/{meter.pub_hex}")
            on_chain_load = chain.state(f"meter/{load_meter.pub_hex}")
        finally:
            chain.close()
    finally:
        node.terminate()
        node.wait(timeout=30)
    assert (on_chain["export_wh"], on_chain["import_wh"]) == (3000, 500)
    assert on_chain["end_ms"] == first + 6000
    wh = sum(round(_expected_kwh(first + 2000 * i, 2000)[1] * 1000) for i in range(3))
    assert (on_chain_load["import_wh"], on_chain_load["end_ms"]) == (wh, first + 6000)


def _shipped(column_file: str, column: str) -> list[float]:
    """The shipped SCE-56 day (24 hourly values), read here with the csv module."""
    import csv
    from importlib import resources

    text = resources.files("gridledger.data.sce56").joinpath(column_file).read_text()
    return [float(r[column]) for r in csv.DictReader(text.splitlines())]


def _expected_kwh(start_ms: int, slot_ms: int) -> tuple[float, float]:
    """(DG2, L5) of microgrid9 in the slot starting at ``start_ms``: DG2's 1.5 MVA rating times
    the solar shape (exported, negative), L5's 0.6464 MW times the price shape, over the slot."""
    hour = start_ms % 86_400_000 // 3_600_000
    solar, price = (
        _shipped("solar_profile_24h.csv", "solar_output"),
        _shipped("energy_price_24h.csv", "energy_price"),
    )
    hours = slot_ms / 3_600_000
    return (-1.5 * solar[hour] / max(solar) * 1000 * hours,
            0.6464 * price[hour] / max(price) * 1000 * hours)  # fmt: skip


def test_grid_profiles_give_each_element_meter_its_energy(chain) -> None:
    from gridledger.demo.community_profiles import meter_profile
    from gridledger.grid.cases import load_case

    net = load_case("microgrid9")
    profile = meter_profile("microgrid9", net, ["DG2", "L5"], T, 3, SLOT)
    assert profile.starts_ms == [T, T + SLOT, T + 2 * SLOT]
    dg, load = _expected_kwh(T, SLOT)  # 08:00-08:45 UTC: hour 8 of the shipped day
    assert profile.kwh["DG2"] == pytest.approx([dg] * 3, rel=1e-12)
    assert profile.kwh["L5"] == pytest.approx([load] * 3, rel=1e-12)
    assert dg < -200 and load > 100  # a sunny morning: the DG exports, the load imports
    # a chain with 2 s slots reads the same day: the power of the 15-minute step, for 2 s
    short = meter_profile("microgrid9", net, ["DG2"], T + 14 * 60_000, 2, 2000)
    assert short.kwh["DG2"] == pytest.approx([_expected_kwh(T, 2000)[0]] * 2, rel=1e-12)
    # posted by the meters bound to the two prosumers
    meters = [
        ProfileMeter("DG2", key("m-pv14"), profile.starts_ms, profile.kwh["DG2"], SLOT),
        ProfileMeter("L5", key("m-house12"), profile.starts_ms, profile.kwh["L5"], SLOT),
    ]
    chain.produce(T + 3 * SLOT)  # fmt: skip
    assert [m.step(chain) for m in meters] == [3, 3]
    chain.produce(T + 3 * SLOT + 1)
    pv = chain.state(f"meter/{key('m-pv14').pub_hex}")
    house = chain.state(f"meter/{key('m-house12').pub_hex}")
    assert (pv["export_wh"], pv["import_wh"]) == (3 * round(-dg * 1000), 0)
    assert (house["export_wh"], house["import_wh"]) == (0, 3 * round(load * 1000))


@pytest.mark.parametrize(
    ("meters", "message"),
    [
        (["L5", "house7"], "meter 'house7': microgrid9 has no load or generator of that name"),
        (["GRID"], "meter 'GRID': that is the external grid of microgrid9, no meter"),
    ],
)
def test_grid_profiles_refuse_a_meter_that_is_no_element(meters, message) -> None:
    from gridledger.demo.community_profiles import meter_profile
    from gridledger.grid.cases import load_case

    with pytest.raises(ProfileError, match=message):
        meter_profile("microgrid9", load_case("microgrid9"), meters, T, 4, SLOT)
    with pytest.raises(ProfileError, match="is not the start of a 900 s slot"):
        meter_profile("microgrid9", load_case("microgrid9"), ["L5"], T + 1000, 4, SLOT)


@pytest.mark.slow
def test_simbench_grid_profiles_are_simbenchs_absolute_values() -> None:
    """On ``simbench:<code>`` a load's and a PV unit's readings are SimBench's own absolute
    profile values (``get_absolute_values``) at the simulated day's steps, times 15 minutes."""
    import simbench

    from gridledger.demo.community_profiles import SIMBENCH_DAY, meter_profile
    from gridledger.grid.cases import load_case

    code = "1-LV-rural3--0-sw"
    net = load_case(f"simbench:{code}")
    sb = simbench.get_simbench_net(code)
    absolute = simbench.get_absolute_values(sb, profiles_instead_of_study_cases=True)
    load, pv = str(net.load["name"].iloc[3]), str(net.gen["name"].iloc[2])
    profile = meter_profile(f"simbench:{code}", net, [load, pv], T, 3, SLOT)
    step = SIMBENCH_DAY * 96 + T % 86_400_000 // SLOT  # 08:00 of the simulated day
    li = sb.load.index[sb.load.name == load][0]
    gi = sb.sgen.index[sb.sgen.name == pv][0]
    want_load = absolute[("load", "p_mw")].loc[step : step + 2, li].to_numpy() * 250
    want_pv = -absolute[("sgen", "p_mw")].loc[step : step + 2, gi].to_numpy() * 250
    np.testing.assert_allclose(profile.kwh[load], want_load, rtol=1e-12)
    np.testing.assert_allclose(profile.kwh[pv], want_pv, rtol=1e-12)
    assert min(want_pv) < -0.05  # the PV unit exports in the morning
