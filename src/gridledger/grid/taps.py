"""On-load tap changers: a network's tap table, its transformers at any tap position, and
pandapower's tap data.

A row of ``Network.tap`` names a transformer branch and its changer: the position ``tap_pos``
in ``[tap_min, tap_max]``, the ``tap_neutral`` position and ``step_percent`` per step, and the
``side`` the changer sits on (``from`` or ``to`` end of our branch).  The branch table holds the
transformer at its current position; at another position ``p`` the winding on the tap side has
``f(p) = 1 + (p − tap_neutral)·step_percent/100`` times its rated turns, so with
``k = f(p)/f(tap_pos)``:

* ``from`` side: the off-nominal ratio is multiplied by ``k`` (the series impedance, referred to
  the ``to`` side, does not change);
* ``to`` side: the ratio is divided by ``k`` and the impedances referred to that side scale
  with the square of its voltage: ``r, x`` times ``k²``, the charging ``b`` and the no-load
  conductance divided by ``k²``.

That is pandapower's model (``build_branch._calc_tap_from_dataframe``: a high-voltage tap
changes the ratio, a low-voltage one also ``r, x, g, b``); ``tests/grid/test_taps.py`` checks
it against pandapower's conversion at other positions, both sides.  The branch's no-load
conductance sits in the shunts named ``no-load <branch> from|to`` (see the loaders): the
``from`` one is ``g/2/ratio²``, so it moves with the ratio too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, SupportsFloat, TypeGuard

import numpy as np
import pandas as pd

from .network import TAP_COLUMNS, Network, NetworkError, table

SIDES = ("from", "to")


def check_taps(net: Network) -> None:
    """Raise :class:`NetworkError` naming the first tap changer that cannot be used."""
    tap = net.tap
    if tap.empty:
        return
    names = net.branch["name"].astype(str)
    counts = names.value_counts()
    seen: set[str] = set()
    for i, row in tap.iterrows():
        where = f"{net.name}: tap changer {i} on branch {row.branch!r}"
        if row.branch in seen:
            raise NetworkError(f"{where}: that branch has two tap changers")
        seen.add(row.branch)
        if counts.get(row.branch, 0) != 1:
            found = "no branch" if row.branch not in counts else "several branches"
            raise NetworkError(f"{where}: {found} of that name")
        kind = net.branch.kind[names == row.branch].iloc[0]
        if kind != "transformer":
            raise NetworkError(f"{where}: the branch is a {kind}, not a transformer")
        if row.side not in SIDES:
            raise NetworkError(f"{where}: side must be 'from' or 'to', got {row.side!r}")
        if not row.tap_min <= row.tap_pos <= row.tap_max:
            raise NetworkError(
                f"{where}: tap_pos {row.tap_pos} outside [tap_min, tap_max] = "
                f"[{row.tap_min}, {row.tap_max}]"
            )
        step = float(row.step_percent)
        if not (math.isfinite(step) and step != 0):
            raise NetworkError(f"{where}: step_percent must be a non-zero number, got {step}")
        lowest = min(turns_factor(row, row.tap_min), turns_factor(row, row.tap_max))
        if lowest <= 0:
            raise NetworkError(
                f"{where}: {step} % per step reaches a turns ratio of {lowest:.3g} within "
                f"[{row.tap_min}, {row.tap_max}]"
            )


def turns_factor(row: Any, pos: int) -> float:
    """f(pos): the tapped winding's turns at ``pos`` per rated turn (``row``: a tap row)."""
    return 1.0 + (int(pos) - int(row.tap_neutral)) * float(row.step_percent) / 100.0


def select_taps(net: Network, taps: str | Sequence[str]) -> list[str]:
    """The branch names of the tap changers to move: ``"all"`` or the names given.

    A name that is not a tap changer of the network is an error naming it and why (no such
    branch, a line, or a transformer without tap data)."""
    known = [str(b) for b in net.tap.branch]
    if isinstance(taps, str):
        if taps == "all":
            if not known:
                raise NetworkError(f"{net.name}: no transformer has tap-changer data")
            return known
        taps = [t.strip() for t in taps.split(",") if t.strip()]
    chosen: list[str] = []
    names = net.branch["name"].astype(str)
    for name in taps:
        if name in known:
            if name not in chosen:
                chosen.append(name)
            continue
        hits = net.branch[names == name]
        if hits.empty:
            raise NetworkError(f"{net.name}: tap control {name!r}: no branch of that name")
        if hits.kind.iloc[0] != "transformer":
            raise NetworkError(
                f"{net.name}: tap control {name!r}: the branch is a {hits.kind.iloc[0]}, "
                "not a transformer"
            )
        raise NetworkError(
            f"{net.name}: tap control {name!r}: the transformer has no tap-changer data "
            "(pandapower: tap_changer_type 'Ratio'; integer tap_pos within tap_min..tap_max; "
            "tap_neutral, tap_step_percent and tap_side set; no tap_dependency_table, no "
            "second changer)"
        )
    if not chosen:
        raise NetworkError(f"{net.name}: no tap control named")
    return chosen


def tap_range(net: Network, branch: str) -> range:
    row = tap_row(net, branch)
    return range(int(row.tap_min), int(row.tap_max) + 1)


def tap_positions(net: Network) -> dict[str, int]:
    tap = net.tap
    return dict(zip(tap["branch"].astype(str), tap["tap_pos"].astype(int).tolist(), strict=True))


def tap_row(net: Network, branch: str) -> Any:
    """The tap table's row of the changer on ``branch``."""
    hits = net.tap[net.tap.branch == branch]
    if hits.empty:
        raise NetworkError(f"{net.name}: no tap changer on branch {branch!r}")
    return hits.iloc[0]


def at_positions(net: Network, positions: Mapping[str, int]) -> Network:
    """The network with the named tap changers moved to the given positions."""
    if not positions:
        return net
    branch = net.branch.copy()
    shunt = net.shunt.copy()
    tap = net.tap.copy()
    names = branch["name"].astype(str).to_numpy()
    shunt_names = shunt["name"].astype(str).to_numpy()
    for name, pos in positions.items():
        row = tap_row(net, name)
        if int(pos) != pos or not row.tap_min <= pos <= row.tap_max:
            raise NetworkError(
                f"{net.name}: tap position {pos} of {name!r} outside [{row.tap_min}, {row.tap_max}]"
            )
        k = turns_factor(row, int(pos)) / turns_factor(row, int(row.tap_pos))
        i = branch.index[names == name][0]
        ratio = float(branch["ratio"][i]) or 1.0
        from_shunt = shunt.index[shunt_names == f"no-load {name} from"]
        to_shunt = shunt.index[shunt_names == f"no-load {name} to"]
        if row.side == "from":
            branch.at[i, "ratio"] = ratio * k
            shunt.loc[from_shunt, "g_mw"] /= k * k  # g/2/ratio²
        else:
            branch.at[i, "ratio"] = ratio / k
            branch.at[i, "r_pu"] = branch["r_pu"][i] * (k * k)
            branch.at[i, "x_pu"] = branch["x_pu"][i] * (k * k)
            branch.at[i, "b_pu"] = branch["b_pu"][i] / (k * k)
            shunt.loc[to_shunt, "g_mw"] /= k * k  # g/2, g ∝ 1/k²; g/2/ratio² is unchanged
        tap.loc[tap.branch == name, "tap_pos"] = int(pos)
    return replace(net, branch=branch, shunt=shunt, tap=tap)


def with_tap_changers(
    net: Network,
    branches: Sequence[str],
    *,
    tap_min: int,
    tap_max: int,
    step_percent: float,
    side: str = "from",
) -> Network:
    """The network with tap changers added on the named branches (made transformers), each at
    its neutral position 0 (the branch as it is)."""
    branch = net.branch.copy()
    names = branch["name"].astype(str)
    missing = [b for b in branches if not (names == b).any()]
    if missing:
        raise NetworkError(f"{net.name}: no branch named {missing}")
    branch.loc[names.isin(list(branches)), "kind"] = "transformer"
    rows = [
        {"branch": b, "tap_pos": 0, "tap_min": tap_min, "tap_max": tap_max, "tap_neutral": 0,
         "step_percent": step_percent, "side": side}
        for b in branches
    ]  # fmt: skip
    tap = table(rows, TAP_COLUMNS)
    if not net.tap.empty:
        tap = pd.concat([net.tap, tap], ignore_index=True)
    return replace(net, branch=branch, tap=tap)


def pandapower_tap_table(
    pp_net: Any, ppc: dict[str, Any], ids: np.ndarray, alive: set[int], branch_names: list[str]
) -> pd.DataFrame:
    """Tap changers of a pandapower network's two-winding transformers, on our branch names.

    ``ppc`` is pandapower's ``to_ppc`` of ``pp_net``; ``ids`` our bus id of each ppc bus and
    ``alive`` the buses kept; ``branch_names`` the names of the branches the loader kept
    (in service, both ends alive), in ppc order.  A transformer is listed when pandapower's
    power flow applies its tap as a plain ratio — ``tap_changer_type == "Ratio"``, no
    tap-dependency table, no second changer — and its ``tap_pos, tap_min, tap_max,
    tap_neutral, tap_step_percent, tap_side`` are set, with integer positions and ``tap_min <=
    tap_pos <= tap_max`` (others stay at their position, as pandapower's power flow has them).
    The high-voltage side is our ``from`` end (pandapower's ppc order).
    """
    from pandapower.pypower.idx_brch import BR_STATUS, F_BUS, T_BUS

    empty = table([], TAP_COLUMNS)
    ranges = pp_net._pd2ppc_lookups.get("branch", {}) or {}
    trafo = pp_net.trafo if "trafo" in pp_net else pd.DataFrame()
    if "trafo" not in ranges or trafo.empty:
        return empty
    start, stop = ranges["trafo"]
    if stop - start != len(trafo):
        return empty
    branch = np.real(ppc["branch"])
    kept: dict[int, int] = {}
    for k, row in enumerate(branch):
        f, t = int(ids[int(row[F_BUS])]), int(ids[int(row[T_BUS])])
        if row[BR_STATUS] > 0 and f in alive and t in alive:
            kept[k] = len(kept)
    if len(kept) != len(branch_names):
        return empty
    counts = pd.Series(branch_names).value_counts()
    rows = []
    for j, (_, tr) in enumerate(trafo.iterrows()):
        kept_row = kept.get(start + j)
        if kept_row is None or counts[branch_names[kept_row]] != 1 or not _plain_ratio_tap(tr):
            continue
        rows.append(
            {
                "branch": branch_names[kept_row],
                "tap_pos": int(tr.tap_pos),
                "tap_min": int(tr.tap_min),
                "tap_max": int(tr.tap_max),
                "tap_neutral": int(tr.tap_neutral),
                "step_percent": float(tr.tap_step_percent),
                "side": "from" if tr.tap_side == "hv" else "to",
            }
        )
    return table(rows, TAP_COLUMNS)


def _plain_ratio_tap(tr: pd.Series) -> bool:
    if tr.get("tap_changer_type") != "Ratio" or tr.get("tap_side") not in ("hv", "lv"):
        return False
    if bool(tr.get("tap_dependency_table", False) is True):
        return False
    if _finite(tr.get("tap2_pos")):
        return False
    degree = tr.get("tap_step_degree")
    if _finite(degree) and float(degree) != 0:
        return False
    fields = ("tap_pos", "tap_min", "tap_max", "tap_neutral")
    values = [tr.get(f) for f in fields]
    if not all(_finite(v) and float(v) == int(float(v)) for v in values):
        return False
    if not float(tr.tap_min) <= float(tr.tap_pos) <= float(tr.tap_max):
        return False
    step = tr.get("tap_step_percent")
    if not (_finite(step) and float(step) != 0):
        return False
    neutral = float(tr.tap_neutral)
    worst = max(abs(float(tr.tap_min) - neutral), abs(float(tr.tap_max) - neutral))
    return worst * abs(float(step)) < 100.0


def _finite(x: Any) -> TypeGuard[str | SupportsFloat]:
    """Whether ``float(x)`` is a finite number."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
