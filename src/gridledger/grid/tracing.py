"""Power-flow tracing by proportional sharing (Bialek 1996), for active and reactive power.

Which generator feeds which load (seed 002 Fig. 8, Table 4): every node passes on what enters
it in proportion to what leaves it — the "proportional sharing" assumption. Solved in closed
form: with T the nodal throughputs, T = s + W·T, where W[n, m] is the share of node m's
throughput that flows to node n; so T = (I − W)⁻¹·s and the power that source s delivers to sink
k is sink_k · [(I − W)⁻¹]_{k,s} · s_s / T_k.

Losses are handled without any approximation by making every branch a node of its own: the
branch node receives what its ends push into it and gives back what its ends draw from it; what
is left is its loss (a sink, always for P) or its line-charging output (a source, often for Q).
So the flow graph is exactly balanced, the sinks (loads, losses, absorbing generators, shunts)
add up to the sources (generators, line charging, capacitors), and every allocation sums to its
totals: each sink's column to the sink, each source's row to the source. Seed 002 Fig. 8 lists
"each generator and transmission line" as providers of reactive power for the same reason.

Signs: a generator with negative output (absorbing Q) is a sink; a load with negative demand is
a source; a shunt's term is whatever closes the bus balance (its consumption, or for a capacitor
its reactive output), so the power-flow mismatch (≤ 1e-8 pu) lands there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .network import Network
from .powerflow import PowerFlowResult


class TracingError(ValueError):
    """The flows cannot be traced (unbalanced graph or circulating flow with no exit)."""


@dataclass(frozen=True)
class Element:
    """A source or sink of the traced graph."""

    kind: str  # "generator" | "load" | "branch" | "shunt"
    name: str
    bus: int  # bus id (for a branch: its from-bus)


@dataclass(frozen=True)
class TracingResult:
    """``share[s, k]``: power that source ``s`` delivers to sink ``k`` (unit of the input)."""

    sources: list[Element]
    sinks: list[Element]
    share: np.ndarray
    source_power: np.ndarray
    sink_power: np.ndarray

    def to_loads(self) -> tuple[list[Element], np.ndarray]:
        """Columns of the load sinks only: (loads, share restricted to them)."""
        cols = [i for i, e in enumerate(self.sinks) if e.kind == "load"]
        return [self.sinks[i] for i in cols], self.share[:, cols]

    def source_index(self, kind: str, name: str) -> int:
        for i, e in enumerate(self.sources):
            if e.kind == kind and e.name == name:
                return i
        raise KeyError(f"no source {kind} {name!r}")

    def sink_index(self, kind: str, name: str) -> int:
        for i, e in enumerate(self.sinks):
            if e.kind == kind and e.name == name:
                return i
        raise KeyError(f"no sink {kind} {name!r}")


def proportional_sharing(
    n_nodes: int,
    edge_from: np.ndarray,
    edge_to: np.ndarray,
    edge_flow: np.ndarray,
    source: np.ndarray,
    sink: np.ndarray,
    rel_tol: float = 1e-6,
) -> np.ndarray:
    """Node-to-node delivery matrix D[s, k] of a lossless, balanced flow graph.

    ``edge_flow`` ≥ 0 flows from ``edge_from`` to ``edge_to``; ``source``/``sink`` ≥ 0 per node.
    Each node must balance: source + inflow = sink + outflow (within ``rel_tol`` of its
    throughput). Row s of D sums to source[s], column k to sink[k].
    """
    edge_from = np.asarray(edge_from, dtype=np.int64)
    edge_to = np.asarray(edge_to, dtype=np.int64)
    flow = np.asarray(edge_flow, dtype=float)
    source = np.asarray(source, dtype=float)
    sink = np.asarray(sink, dtype=float)
    if np.any(flow < 0) or np.any(source < 0) or np.any(sink < 0):
        raise TracingError("edge flows, sources and sinks must be non-negative")
    inflow = np.bincount(edge_to, weights=flow, minlength=n_nodes)
    outflow = np.bincount(edge_from, weights=flow, minlength=n_nodes)
    through = source + inflow
    imbalance = np.abs(through - sink - outflow)
    scale = np.maximum(through, 1.0)
    bad = np.flatnonzero(imbalance > rel_tol * scale)
    if bad.size:
        n = int(bad[0])
        raise TracingError(
            f"node {n} does not balance: source + inflow = {through[n]:.6g}, "
            f"sink + outflow = {sink[n] + outflow[n]:.6g}"
        )
    safe = np.where(through > 0, through, 1.0)
    w = np.zeros((n_nodes, n_nodes))
    np.add.at(w, (edge_to, edge_from), flow / safe[edge_from])
    try:
        a = np.linalg.solve(np.eye(n_nodes) - w, np.eye(n_nodes))
    except np.linalg.LinAlgError as exc:
        raise TracingError("flow graph has a circulating flow with no sink") from exc
    # D[s, k] = source_s * a[k, s] * sink_k / T_k
    frac = np.where(through > 0, sink / safe, 0.0)
    result: np.ndarray = (a * frac[:, None]).T * source[:, None]
    return result


def trace(
    n_bus: int,
    bus_ids: np.ndarray,
    branch_from: np.ndarray,
    branch_to: np.ndarray,
    flow_from: np.ndarray,
    flow_to: np.ndarray,
    gen_bus: np.ndarray,
    gen_power: np.ndarray,
    load_bus: np.ndarray,
    load_power: np.ndarray,
    gen_names: list[str] | None = None,
    load_names: list[str] | None = None,
    branch_names: list[str] | None = None,
) -> TracingResult:
    """Trace one component (P or Q) of a solved power flow.

    Bus arguments are positions 0..n_bus-1; ``flow_from``/``flow_to`` is the power entering the
    branch at each end (MATPOWER/pandapower sign: positive = leaving the bus). The branch's loss
    is ``flow_from + flow_to``.
    """
    nl = len(branch_from)
    gen_names = gen_names or [f"gen{i}" for i in range(len(gen_bus))]
    load_names = load_names or [f"load{i}" for i in range(len(load_bus))]
    branch_names = branch_names or [
        f"{bus_ids[f]}-{bus_ids[t]}" for f, t in zip(branch_from, branch_to, strict=True)
    ]
    ff = np.asarray(flow_from, dtype=float)
    ft = np.asarray(flow_to, dtype=float)
    n_nodes = n_bus + nl
    line_node = n_bus + np.arange(nl)
    # Edges bus -> branch node where the end pushes power in, branch node -> bus otherwise.
    e_from, e_to, e_flow = [], [], []
    for ends, flow in ((np.asarray(branch_from), ff), (np.asarray(branch_to), ft)):
        out = flow >= 0
        e_from.append(np.where(out, ends, line_node))
        e_to.append(np.where(out, line_node, ends))
        e_flow.append(np.abs(flow))
    edge_from = np.concatenate(e_from)
    edge_to = np.concatenate(e_to)
    edge_flow = np.concatenate(e_flow)

    elements_src: list[tuple[Element, int, float]] = []
    elements_snk: list[tuple[Element, int, float]] = []
    for g, (b, p) in enumerate(zip(gen_bus, gen_power, strict=True)):
        e = Element("generator", gen_names[g], int(bus_ids[b]))
        (elements_src if p >= 0 else elements_snk).append((e, int(b), abs(float(p))))
    for i, (b, p) in enumerate(zip(load_bus, load_power, strict=True)):
        e = Element("load", load_names[i], int(bus_ids[b]))
        (elements_snk if p >= 0 else elements_src).append((e, int(b), abs(float(p))))
    for k in range(nl):
        net = float(ff[k] + ft[k])
        e = Element("branch", branch_names[k], int(bus_ids[branch_from[k]]))
        (elements_snk if net >= 0 else elements_src).append((e, int(line_node[k]), abs(net)))
    # What closes each bus balance: shunts (and the power-flow mismatch).
    gen_net = np.bincount(np.asarray(gen_bus, dtype=np.int64), weights=gen_power, minlength=n_bus)
    load_net = np.bincount(
        np.asarray(load_bus, dtype=np.int64), weights=load_power, minlength=n_bus
    )
    branch_out = np.bincount(np.asarray(branch_from), weights=ff, minlength=n_bus) + np.bincount(
        np.asarray(branch_to), weights=ft, minlength=n_bus
    )
    shunt = gen_net - load_net - branch_out  # consumed at the bus beyond loads and branches
    for b in range(n_bus):
        if shunt[b] != 0.0:
            e = Element("shunt", f"shunt@{bus_ids[b]}", int(bus_ids[b]))
            (elements_snk if shunt[b] > 0 else elements_src).append((e, b, abs(float(shunt[b]))))

    src_node = np.zeros(n_nodes)
    snk_node = np.zeros(n_nodes)
    for _, node, p in elements_src:
        src_node[node] += p
    for _, node, p in elements_snk:
        snk_node[node] += p
    d = proportional_sharing(n_nodes, edge_from, edge_to, edge_flow, src_node, snk_node)
    # Split node-to-node delivery among the elements at each node, pro rata.
    rows = np.array(
        [p / src_node[node] if src_node[node] > 0 else 0.0 for _, node, p in elements_src]
    )
    cols = np.array(
        [p / snk_node[node] if snk_node[node] > 0 else 0.0 for _, node, p in elements_snk]
    )
    src_nodes = np.array([node for _, node, _ in elements_src], dtype=np.int64)
    snk_nodes = np.array([node for _, node, _ in elements_snk], dtype=np.int64)
    share = d[np.ix_(src_nodes, snk_nodes)] * rows[:, None] * cols[None, :]
    return TracingResult(
        sources=[e for e, _, _ in elements_src],
        sinks=[e for e, _, _ in elements_snk],
        share=share,
        source_power=np.array([p for _, _, p in elements_src]),
        sink_power=np.array([p for _, _, p in elements_snk]),
    )


def allocate_to_loads(
    result: TracingResult, amount_by_source: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Split an amount per source (e.g. a generator's reactive cost, $/h) over the loads it feeds.

    Seed 002 Table 4: each generator's reactive-power cost goes to the loads in proportion to the
    reactive power traced from it to each of them (power it loses in branches is not billed
    separately: the loads it reaches carry it). A source that reaches no load (all its output is
    absorbed in branches or by other generators) is split by the loads' own demand. Each source's
    allocations sum exactly to its amount.
    """
    loads, share = result.to_loads()
    if not loads:
        raise TracingError("no loads to allocate to")
    demand = np.array([result.sink_power[result.sinks.index(ld)] for ld in loads])
    out: dict[str, dict[str, float]] = {}
    for name, amount in amount_by_source.items():
        idx = [i for i, e in enumerate(result.sources) if e.name == name]
        row = share[idx].sum(axis=0) if idx else np.zeros(len(loads))
        weights = row if row.sum() > 0 else demand
        if weights.max() <= 0:
            weights = np.ones(len(loads))
        weights = weights / weights.max()  # first, so that denormal shares still add up to 1
        split = amount * weights / weights.sum()
        out[name] = {ld.name: float(v) for ld, v in zip(loads, split, strict=True)}
    return out


def trace_power_flow(
    net: Network,
    res: PowerFlowResult,
    component: str = "p",
    svc_q_mvar: np.ndarray | None = None,
) -> TracingResult:
    """Trace the active (``"p"``, MW) or reactive (``"q"``, Mvar) flows of a solved power flow.

    SVCs (reactive only) take part in the ``q`` trace as providers (or absorbers) named by their
    table name, at ``svc_q_mvar`` (default: the network's own ``q_mvar``).
    """
    if component not in ("p", "q"):
        raise ValueError(f"component must be 'p' or 'q', got {component!r}")
    if not res.converged:
        raise TracingError("cannot trace a power flow that did not converge")
    pos = net.bus_position()
    ff, ft = (res.p_from_mw, res.p_to_mw) if component == "p" else (res.q_from_mvar, res.q_to_mvar)
    gen_power = res.gen_p_mw if component == "p" else res.gen_q_mvar
    load_col = "p_mw" if component == "p" else "q_mvar"
    gen_bus = np.array([pos[int(b)] for b in net.gen.bus], dtype=np.int64)
    gen_names = [str(n) for n in net.gen["name"]]
    if component == "q" and len(net.svc):
        q_svc = net.svc.q_mvar.to_numpy(float) if svc_q_mvar is None else np.asarray(svc_q_mvar)
        gen_bus = np.concatenate([gen_bus, [pos[int(b)] for b in net.svc.bus]])
        gen_power = np.concatenate([gen_power, q_svc])
        gen_names = gen_names + [str(n) for n in net.svc["name"]]
    return trace(
        n_bus=len(pos),
        bus_ids=net.bus_ids,
        branch_from=np.array([pos[int(b)] for b in net.branch.from_bus], dtype=np.int64),
        branch_to=np.array([pos[int(b)] for b in net.branch.to_bus], dtype=np.int64),
        flow_from=ff,
        flow_to=ft,
        gen_bus=gen_bus,
        gen_power=gen_power,
        load_bus=np.array([pos[int(b)] for b in net.load.bus], dtype=np.int64),
        load_power=net.load[load_col].to_numpy(float),
        gen_names=gen_names,
        load_names=[str(n) for n in net.load["name"]],
        branch_names=[str(n) for n in net.branch["name"]],
    )
