"""Proportional-sharing tracing: hand-computed cases and exact-sum properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridledger.grid.tracing import (
    TracingError,
    allocate_to_loads,
    proportional_sharing,
    trace,
)


def three_bus(lossy: bool = False):
    """A: GA 100 -> B (60) and C (40); B: GB 50, load 30, -> C (80); C: load 120.

    Hand computation (Bialek): B's throughput is 110, 60/110 from GA and 50/110 from GB. So LB gets
    30·60/110 = 16.3636 from GA and 13.6364 from GB; the 80 sent to C carry 43.6364 (GA) and
    36.3636 (GB); LC = 40 (GA direct) + 43.6364 = 83.6364 from GA and 36.3636 from GB.
    """
    ids = np.array([1, 2, 3])
    bf = np.array([0, 0, 1])
    bt = np.array([1, 2, 2])
    ff = np.array([60.0, 40.0, 80.0])
    loss = np.array([1.0, 0.5, 2.0]) if lossy else np.zeros(3)
    ft = -(ff - loss)
    gen_bus = np.array([0, 1])
    load_bus = np.array([1, 2])
    gen = np.array([100.0, 50.0])
    load = np.array([30.0, 120.0])
    if lossy:
        load = load - np.array([1.0, 2.5])
    return dict(
        n_bus=3,
        bus_ids=ids,
        branch_from=bf,
        branch_to=bt,
        flow_from=ff,
        flow_to=ft,
        gen_bus=gen_bus,
        gen_power=gen,
        load_bus=load_bus,
        load_power=load,
        gen_names=["GA", "GB"],
        load_names=["LB", "LC"],
    )


def test_bialek_hand_computed_lossless():
    r = trace(**three_bus())
    ga, gb = r.source_index("generator", "GA"), r.source_index("generator", "GB")
    lb, lc = r.sink_index("load", "LB"), r.sink_index("load", "LC")
    assert r.share[ga, lb] == pytest.approx(30 * 60 / 110)
    assert r.share[gb, lb] == pytest.approx(30 * 50 / 110)
    assert r.share[ga, lc] == pytest.approx(40 + 80 * 60 / 110)
    assert r.share[gb, lc] == pytest.approx(80 * 50 / 110)


def test_losses_are_sinks_and_everything_sums():
    r = trace(**three_bus(lossy=True))
    np.testing.assert_allclose(r.share.sum(axis=1), r.source_power, rtol=1e-12)
    np.testing.assert_allclose(r.share.sum(axis=0), r.sink_power, rtol=1e-12)
    branch_loss = sum(p for e, p in zip(r.sinks, r.sink_power, strict=True) if e.kind == "branch")
    assert branch_loss == pytest.approx(3.5)
    # Line 1-3 carries only GA's power, so its 0.5 loss is all GA's.
    k = r.sink_index("branch", "1-3")
    assert r.share[r.source_index("generator", "GA"), k] == pytest.approx(0.5)


def test_negative_generation_is_a_sink_and_line_charging_a_source():
    # Q: the generator at bus 1 absorbs 10 Mvar; the line's two ends both draw from it (charging).
    r = trace(
        n_bus=2,
        bus_ids=np.array([1, 2]),
        branch_from=np.array([0]),
        branch_to=np.array([1]),
        flow_from=np.array([-10.0]),
        flow_to=np.array([-15.0]),
        gen_bus=np.array([0]),
        gen_power=np.array([-10.0]),
        load_bus=np.array([1]),
        load_power=np.array([15.0]),
    )
    assert [e.kind for e in r.sources] == ["branch"]
    assert {e.kind for e in r.sinks} == {"generator", "load"}
    assert r.share.sum() == pytest.approx(25.0)


def test_unbalanced_graph_is_rejected_with_the_node():
    with pytest.raises(TracingError, match="node 1 does not balance"):
        proportional_sharing(
            2, np.array([0]), np.array([1]), np.array([5.0]), np.array([5.0, 0]), np.array([0, 4.0])
        )
    with pytest.raises(TracingError, match="non-negative"):
        proportional_sharing(
            2, np.array([0]), np.array([1]), np.array([-5.0]), np.zeros(2), np.zeros(2)
        )


@st.composite
def radial_flows(draw):
    """A random tree with random loads, generators and lossy branches, solved for exact balance."""
    n = draw(st.integers(2, 8))
    parent = [draw(st.integers(0, i - 1)) for i in range(1, n)]
    load = np.array([draw(st.floats(0, 50)) for _ in range(n)])
    gen = np.array([draw(st.floats(0, 80)) if i else 0.0 for i in range(n)])
    loss_frac = np.array([draw(st.floats(0, 0.05)) for _ in range(n - 1)])
    # Post-order: the flow into each subtree root from its parent covers its deficit plus loss.
    need = load - gen
    ff = np.zeros(n - 1)
    ft = np.zeros(n - 1)
    for child in range(n - 1, 0, -1):
        k = child - 1
        deficit = need[child]
        if deficit >= 0:  # parent -> child
            ft[k] = -deficit
            ff[k] = deficit * (1 + loss_frac[k])
        else:  # child -> parent, losses borne on the child's side
            ff[k] = deficit
            ft[k] = -deficit * (1 + loss_frac[k])
        need[parent[k]] += ff[k]
    gen[0] = max(need[0], 0.0)
    load_0 = max(-need[0], 0.0)
    load = load.copy()
    load[0] += load_0
    return dict(
        n_bus=n,
        bus_ids=np.arange(1, n + 1),
        branch_from=np.array(parent, dtype=int),
        branch_to=np.arange(1, n),
        flow_from=ff,
        flow_to=ft,
        gen_bus=np.arange(n),
        gen_power=gen,
        load_bus=np.arange(n),
        load_power=load,
    )


@settings(max_examples=60, deadline=None)
@given(radial_flows())
def test_allocations_sum_to_totals(case):
    r = trace(**case)
    np.testing.assert_allclose(r.share.sum(axis=1), r.source_power, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r.share.sum(axis=0), r.sink_power, rtol=1e-9, atol=1e-9)
    assert (r.share >= -1e-12).all()
    assert r.source_power.sum() == pytest.approx(r.sink_power.sum(), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(radial_flows(), st.floats(1, 1000))
def test_cost_allocation_to_loads_sums_to_cost(case, cost):
    r = trace(**case)
    gens = [e.name for e in r.sources if e.kind == "generator"]
    if not gens or not any(e.kind == "load" for e in r.sinks):
        return
    alloc = allocate_to_loads(r, {g: cost for g in gens})
    for g in gens:
        assert sum(alloc[g].values()) == pytest.approx(cost, rel=1e-12)
        assert min(alloc[g].values()) >= 0


def test_allocation_follows_traced_shares():
    r = trace(**three_bus())
    alloc = allocate_to_loads(r, {"GB": 110.0})
    # GB's 50 go 13.6364 to LB and 36.3636 to LC: the cost splits 30:80.
    assert alloc["GB"]["LB"] == pytest.approx(30.0)
    assert alloc["GB"]["LC"] == pytest.approx(80.0)


@pytest.mark.parametrize("component", ["p", "q"])
def test_trace_a_real_power_flow_sums_to_the_power_flow(component):
    from gridledger.grid.cases import load_case
    from gridledger.grid.powerflow import run_pf
    from gridledger.grid.tracing import trace_power_flow

    net = load_case("ieee9")
    res = run_pf(net)
    r = trace_power_flow(net, res, component)
    np.testing.assert_allclose(r.share.sum(axis=1), r.source_power, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(r.share.sum(axis=0), r.sink_power, rtol=1e-7, atol=1e-7)
    _, to_loads = r.to_loads()
    col = "p_mw" if component == "p" else "q_mvar"
    np.testing.assert_allclose(to_loads.sum(axis=0), net.load[col].to_numpy(), rtol=1e-9)
    if component == "p":
        branch = sum(p for e, p in zip(r.sinks, r.sink_power, strict=True) if e.kind == "branch")
        assert branch == pytest.approx(res.loss_mw, rel=1e-9)
    else:  # case9's lines generate reactive power: they show up as providers
        assert any(e.kind == "branch" for e in r.sources)
