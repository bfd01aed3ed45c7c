"""Meter readings from a measured CSV profile: posted per ended slot, signed by each meter,
resumed from the chain after a restart; bad profiles are refused naming the line."""

from __future__ import annotations

from pathlib import Path

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
    home = tmp_path / "node"
    save_key(home / "keys" / "validator.json", val, "validator")
    members = [{"pub_key": dso.pub_hex, "role": "dso", "name": "DSO"},
               {"pub_key": pv.pub_hex, "role": "prosumer", "name": "pv", "bus": 14}]  # fmt: skip
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
            assert chain.submit(dso, "market.configure", {"slot_ms": 2000}).ok
            assert chain.submit(dso, "member.bind_meter",
                                {"meter": meter.pub_hex, "prosumer": pv.pub_hex}).ok  # fmt: skip
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
            time.sleep(0.3)  # the last reading's block
            on_chain = chain.state(f"meter/{meter.pub_hex}")
        finally:
            chain.close()
    finally:
        node.terminate()
        node.wait(timeout=30)
    assert (on_chain["export_wh"], on_chain["import_wh"]) == (3000, 500)
    assert on_chain["end_ms"] == first + 6000
