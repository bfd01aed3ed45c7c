"""The DSO's side of a demand response event: the certificate that the event relieves a limit.

Off chain, on the DSO's grid: an AC power flow of the operating point the event is called for
(a line above its rating) and one with the planned reductions taken off the members' loads
(each at its own power factor).  The certificate names the line, both loadings in ppm of the
rating, and the SHA-256 of the whole document (both power flows' branch loadings, the
reductions): that digest goes on chain with ``dr.open``, the document to whoever audits it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from gridledger.chain import encoding
from gridledger.grid.network import Network
from gridledger.grid.powerflow import run_pf

PPM = 1_000_000


class NoReliefError(ValueError):
    """The planned reductions do not bring the line within its rating (or it is not over it)."""


def peak_operating_point(net: Network, load_scale_ppm: int, dg_output_ppm: int = 0) -> Network:
    """The network with every load scaled (P and Q) and the non-slack generators' active output
    scaled: an evening peak is loads up and PV down."""
    load = net.load.copy()
    load["p_mw"] = load["p_mw"] * load_scale_ppm / PPM
    load["q_mvar"] = load["q_mvar"] * load_scale_ppm / PPM
    gen = net.gen.copy()
    dg = gen["role"] != "slack"
    gen.loc[dg, "p_mw"] = gen.loc[dg, "p_mw"] * dg_output_ppm / PPM
    return net.with_tables(load=load, gen=gen)


def with_reductions(net: Network, reductions_w: Mapping[int, int]) -> Network:
    """Loads at each bus reduced by ``reductions_w[bus]`` W in total, Q at the same ratio."""
    load = net.load.copy()
    for bus, w in reductions_w.items():
        at = load["bus"] == bus
        p = float(load.loc[at, "p_mw"].sum())
        if not at.any() or w > p * 1e6:
            raise ValueError(f"bus {bus} has {p * 1e6:.0f} W of load, cannot reduce it by {w} W")
        keep = 1.0 - w / (p * 1e6)
        load.loc[at, "p_mw"] = load.loc[at, "p_mw"] * keep
        load.loc[at, "q_mvar"] = load.loc[at, "q_mvar"] * keep
    return net.with_tables(load=load)


def _branch_index(net: Network, line: str) -> int:
    names = net.branch["name"].astype(str).tolist()
    short = [n.split(" ")[0] for n in names]
    for candidates in (names, short):
        if candidates.count(line) == 1:
            return candidates.index(line)
    raise ValueError(f"{net.name}: no single branch named {line!r} (branches: {short})")


def _loading_ppm(loading_pct: np.ndarray) -> list[int]:
    return [round(float(x) * 10_000) for x in loading_pct]


def relief_certificate(
    net: Network, line: str, reductions_w: Mapping[int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the certificate for ``dr.open``, the document its digest covers).  Raises
    :class:`NoReliefError` unless the line is over its rating before and within it after."""
    i = _branch_index(net, line)
    before = run_pf(net, regulator_control="q")
    after = run_pf(with_reductions(net, reductions_w), regulator_control="q")
    b, a = _loading_ppm(before.loading_pct), _loading_ppm(after.loading_pct)
    if not b[i] > PPM >= a[i]:
        raise NoReliefError(
            f"line {line}: loading {b[i] / 1e4:.1f} % without the event and {a[i] / 1e4:.1f} % "
            "with it; a DR event is certified only when it brings an overloaded line within "
            "its rating"
        )
    doc = {
        "case": net.name,
        "line": line,
        "reductions_w": {str(k): int(v) for k, v in sorted(reductions_w.items())},
        "branches": [str(n).split(" ")[0] for n in net.branch["name"]],
        "loading_before_ppm": b,
        "loading_after_ppm": a,
        "loss_before_w": round(before.loss_mw * 1e6),
        "loss_after_w": round(after.loss_mw * 1e6),
    }
    digest = hashlib.sha256(encoding.encode(doc)).hexdigest()
    cert = {"digest": digest, "line": line, "loading_before_ppm": b[i], "loading_after_ppm": a[i]}
    return cert, doc


def split_request(requested_w: int, loads_w: Mapping[str, int]) -> dict[str, int]:
    """The DSO's plan: the requested reduction spread over the eligible members in proportion
    to their load (integers, exactly ``requested_w`` in total)."""
    from gridledger.market.settlement import allocate_pro_rata

    names = sorted(loads_w)
    shares = allocate_pro_rata(requested_w, [loads_w[n] for n in names])
    return dict(zip(names, shares, strict=True))
