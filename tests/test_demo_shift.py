"""The demo with processes schedules its day once its agent processes are ready, by moving the
plan: every block time moves by the same whole number of slots, nothing else changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gridledger.demo.plan import agents_for_role, load_plan, make_plan, shift_plan
from gridledger.demo.scenario import PHASES

SLOT_MS = 4_000
START_MS = 1_780_000_000_000


def _times(node: Any, path: str = "") -> dict[str, int]:
    """Every ``*_ms`` field of the plan but the slot length, by its path in the document."""
    if isinstance(node, dict):
        out: dict[str, int] = {}
        for k, v in node.items():
            if k.endswith("_ms") and k != "slot_ms" and isinstance(v, int):
                out[f"{path}/{k}"] = v
            else:
                out.update(_times(v, f"{path}/{k}"))
        return out
    if isinstance(node, list):
        return {k: v for i, x in enumerate(node) for k, v in _times(x, f"{path}[{i}]").items()}
    return {}


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    return make_plan(home, START_MS, SLOT_MS, phases=tuple(PHASES[:2]))


def test_every_block_time_moves_and_nothing_else(plan: dict[str, Any]) -> None:
    delta = 7 * SLOT_MS
    moved = shift_plan(plan, delta)
    before, after = _times(plan), _times(moved)
    assert before.keys() == after.keys() and len(before) > 10
    for where, t in before.items():
        # the first grid phase is in force from 0, whenever the day starts
        expected = t if where == "/phases[0]/from_ms" and t == 0 else t + delta
        assert after[where] == expected, where
    assert plan["phases"][1]["from_ms"] > 0  # the later phase's switch time did move

    times = {"start_ms", "end_ms", "t1_ms", "from_ms", "post_at_ms", "at_ms"}

    def without_times(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_times(v) for k, v in node.items() if k not in times}
        return [without_times(x) for x in node] if isinstance(node, list) else node

    assert without_times(moved) == without_times(plan)
    assert plan["start_ms"] == START_MS  # the original is left as it was


def test_moved_agents_see_the_moved_times(plan: dict[str, Any], tmp_path: Path) -> None:
    moved = shift_plan(plan, 3 * SLOT_MS)
    orders = [s for a in agents_for_role(moved, "prosumers") for s in a.profile]
    assert sorted(s.start_ms for s in orders) == sorted(
        o["start_ms"] + 3 * SLOT_MS for o in plan["orders"]
    )
    # make_plan wrote plan.json: what the agent processes read is the plan itself
    assert load_plan(Path(plan["home"]) / "demo" / "plan.json") == plan


@pytest.mark.parametrize("delta", [-SLOT_MS, SLOT_MS // 2, 1])
def test_a_plan_moves_forward_by_whole_slots_only(plan: dict[str, Any], delta: int) -> None:
    with pytest.raises(ValueError, match=f"by whole market slots forward, not {delta} ms"):
        shift_plan(plan, delta)


def test_a_plan_with_a_day_ahead_schedule_is_not_moved(plan: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="day-ahead"):
        shift_plan({**plan, "day_ahead": {"day_start_ms": 0}}, SLOT_MS)
