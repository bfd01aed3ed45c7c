"""A feeder's hour as a pandapower network: the independent AC power flow for DistFlow tests."""

from __future__ import annotations

import pandapower as pp

KW_PER_PU = 1000.0


def feeder_power_flow(feeder, p_mw, q_mvar_without_cap, root_vm_pu: float):
    """pandapower AC power flow of one hour: node injections ``p_mw``, ``q_mvar_without_cap``
    (node 0's ignored: the external grid is the slack at ``root_vm_pu``); shunt capacitors as
    pandapower shunts, so they inject b·|V|² as in the SOCP.  Returns the solved network."""
    net = pp.create_empty_network(sn_mva=1.0)
    buses = [pp.create_bus(net, vn_kv=feeder.base_kv) for _ in range(feeder.n_nodes)]
    z_base = feeder.base_kv**2
    for i in range(1, feeder.n_nodes):
        pp.create_line_from_parameters(
            net, buses[int(feeder.parent[i])], buses[i], length_km=1.0,
            r_ohm_per_km=feeder.r_pu[i] * z_base, x_ohm_per_km=feeder.x_pu[i] * z_base,
            c_nf_per_km=0.0, max_i_ka=10.0,
        )  # fmt: skip
    pp.create_ext_grid(net, buses[0], vm_pu=root_vm_pu)
    for i in range(1, feeder.n_nodes):
        pp.create_load(net, buses[i], p_mw=-p_mw[i], q_mvar=-q_mvar_without_cap[i])
        cap_mvar = feeder.ders[i].capacitor_kvar / KW_PER_PU
        if cap_mvar:
            pp.create_shunt(net, buses[i], q_mvar=-cap_mvar, p_mw=0.0)
    pp.runpp(net, tolerance_mva=1e-10)
    return net
