"""Chain state keys: each contract module is the one home of its keys' layout.

The layout is consensus-critical (keys are leaves of the state tree, so they decide the state
root): the builders are pinned here to the literal layout, and no other module may spell a key
prefix by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

from gridledger.chain.app import gate_failed_key, seq_key
from gridledger.chain.contracts.aggregator import round_key
from gridledger.chain.contracts.billing import bill_key, bill_prefix, config_key
from gridledger.chain.contracts.certificates import REC_PREFIX, rec_key
from gridledger.chain.contracts.ev import active_key, meter_busy_key, session_key
from gridledger.chain.contracts.membership import MEMBER_PREFIX, member_key
from gridledger.chain.contracts.metering import meter_key
from gridledger.chain.contracts.settlement import (
    DONE_PREFIX,
    done_key,
    green_key,
    reading_key,
    rec_carry_key,
    rec_count_key,
)
from gridledger.chain.contracts.tokens import balance_key, balance_prefix, supply_key

PK = "ab" * 32
SRC = Path(__file__).resolve().parents[2] / "src" / "gridledger"

# prefix -> the module that owns it (relative to src/gridledger)
OWNERS = {
    "member/": "chain/contracts/membership.py",
    "bal/": "chain/contracts/tokens.py",
    "supply/": "chain/contracts/tokens.py",
    "seq/": "chain/app.py",
    "txgate/": "chain/app.py",
    "rec/": "chain/contracts/certificates.py",
    "meter/": "chain/contracts/metering.py",
    "admm/": "chain/contracts/aggregator.py",
    "bill/": "chain/contracts/billing.py",
    "settle/": "chain/contracts/settlement.py",
    "ev/": "chain/contracts/ev.py",
}


def test_builders_keep_the_literal_layout():
    assert member_key(PK) == f"member/{PK}" and MEMBER_PREFIX == "member/"
    assert balance_key("utoken", PK) == f"bal/utoken/{PK}"
    assert balance_prefix("ewh") == "bal/ewh/" and balance_key("ewh", PK).startswith("bal/ewh/")
    assert supply_key("ewh") == "supply/ewh"
    assert seq_key(PK) == f"seq/{PK}"
    assert gate_failed_key(PK) == f"txgate/{PK}"
    assert rec_key("r1") == "rec/r1" and REC_PREFIX == "rec/"
    assert meter_key(PK) == f"meter/{PK}"
    assert round_key("day-ahead", "state") == "admm/day-ahead/state"
    assert round_key("r1", "x", 3) == "admm/r1/x/3"
    assert config_key("r1") == "bill/r1/config"
    assert bill_key("r1", 2, 7) == "bill/r1/2/7" and bill_key("r1", 2, 7).startswith(
        bill_prefix("r1")
    )
    assert done_key("m0", 5) == "settle/done/m0/5" and done_key("m0", 5).startswith(DONE_PREFIX)
    assert reading_key(PK, 5) == f"settle/reading/{PK}/5"
    assert green_key(PK) == f"settle/green/{PK}"
    assert rec_carry_key(PK) == f"settle/rec_carry/{PK}"
    assert rec_count_key(PK) == f"settle/rec_count/{PK}"
    assert session_key(PK) == f"ev/session/{PK}" and active_key(PK) == f"ev/active/{PK}"
    assert meter_busy_key(PK) == f"ev/meter/{PK}"


def _hand_written(prefix: str) -> re.Pattern[str]:
    # a string literal (plain, f- or bytes) that starts with the prefix
    return re.compile(r"""(?<![\w/])[fb]?["']""" + re.escape(prefix))


def test_no_module_spells_another_contracts_key_by_hand():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("chain/contracts/market"):
            continue  # the market contracts keep their own key module
        text = path.read_text()
        for prefix, owner in OWNERS.items():
            if rel != owner and _hand_written(prefix).search(text):
                offenders.append(f"{rel}: {prefix}")
    assert offenders == []
