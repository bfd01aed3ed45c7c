"""The R-OPF as a pandapower OPF: an independent reference for the exact solver.

The same network and the same problem: the slack's active power is the only cost (with every
other active injection fixed that is the losses plus a constant), the slack holds its voltage,
and only the R-OPF's variables move — the regulators' voltage set-points (``vm``: pandapower
``gen`` with P pinned) or their reactive injections (``q``: ``sgen`` with P pinned and Q within
the capability circle at that P). Bus voltage limits and line current ratings carry over.

The cost is 1000 per MW, not 1: PIPS's stopping test works on the cost's scale, and at 1 per MW
it stops 7 % above the optimum on microgrid9 (losses are 0.015 MW there); at 1000 it agrees with
our SLSQP optimum to 1e-9.

Only for networks with a single slack: pandapower's OPF has no distributed slack, so for the
islanded microgrid it would solve a different problem.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandapower as pp

from ..network import GenRole, Network

COST_PER_MW = 1000.0


def to_pandapower(net: Network, control: str) -> pp.pandapowerNet:
    """The same network as a pandapower OPF: cost = slack P, only the R-OPF variables move."""
    pn = pp.create_empty_network(sn_mva=net.base_mva, f_hz=net.f_hz)
    idx = {}
    for b, row in zip(net.bus.index.to_numpy(int).tolist(), net.bus.itertuples(), strict=True):
        idx[b] = pp.create_bus(
            pn, vn_kv=row.vn_kv, min_vm_pu=row.vmin_pu, max_vm_pu=row.vmax_pu, name=str(b)
        )
    for _, br in net.branch.iterrows():
        vn = float(net.bus.loc[br.from_bus, "vn_kv"])
        if br.ratio not in (0.0, 1.0) or br.shift_deg != 0:
            _add_transformer(pn, net, br, idx)
            continue
        z_base = vn**2 / net.base_mva
        # case9's transformers have no tap and no resistance: as lines they are the same
        # series reactance (pandapower's own case9 does the same); r = 1e-9 pu keeps the
        # OPF's derivatives finite.
        pp.create_line_from_parameters(
            pn,
            idx[int(br.from_bus)],
            idx[int(br.to_bus)],
            length_km=1.0,
            r_ohm_per_km=max(br.r_pu, 1e-9) * z_base,
            x_ohm_per_km=br.x_pu * z_base,
            c_nf_per_km=br.b_pu / z_base / (2 * math.pi * net.f_hz) * 1e9,
            max_i_ka=(br.rate_mva / (math.sqrt(3) * vn)) if br.rate_mva > 0 else 1e6,
            max_loading_percent=100.0,
        )
    for _, ld in net.load.iterrows():
        pp.create_load(pn, idx[int(ld.bus)], p_mw=ld.p_mw, q_mvar=ld.q_mvar)
    for _, g in net.gen.iterrows():
        bus = idx[int(g.bus)]
        if g.role == GenRole.SLACK:
            eg = pp.create_ext_grid(pn, bus, vm_pu=g.vm_pu, min_q_mvar=g.qmin_mvar,
                                    max_q_mvar=g.qmax_mvar)  # fmt: skip
            pn.bus.loc[bus, ["min_vm_pu", "max_vm_pu"]] = g.vm_pu
            pp.create_poly_cost(pn, eg, "ext_grid", cp1_eur_per_mw=COST_PER_MW)
        elif control == "vm":
            gi = pp.create_gen(pn, bus, p_mw=g.p_mw, vm_pu=g.vm_pu, min_p_mw=g.p_mw,
                               max_p_mw=g.p_mw, min_q_mvar=g.qmin_mvar, max_q_mvar=g.qmax_mvar,
                               controllable=True)  # fmt: skip
            pp.create_poly_cost(pn, gi, "gen", cp1_eur_per_mw=0.0)
        else:
            cap = math.sqrt(max(g.sn_mva**2 - g.p_mw**2, 0.0))
            si = pp.create_sgen(pn, bus, p_mw=g.p_mw, q_mvar=g.q_mvar, min_p_mw=g.p_mw,
                                max_p_mw=g.p_mw, min_q_mvar=max(-cap, g.qmin_mvar),
                                max_q_mvar=min(cap, g.qmax_mvar), controllable=True)  # fmt: skip
            pp.create_poly_cost(pn, si, "sgen", cp1_eur_per_mw=0.0)
    return pn


def _add_transformer(pn: pp.pandapowerNet, net: Network, br: Any, idx: dict[int, int]) -> None:
    """An off-nominal branch as a pandapower transformer rated at the system base, its ratio
    a tap on the from (``hv``) side: pandapower's ppc ratio is then ``br.ratio`` and its
    impedance ``r_pu + j x_pu`` on the to side (MATPOWER's convention), no magnetizing branch."""
    if br.b_pu != 0:
        raise ValueError(f"branch {br['name']}: a transformer with charging b_pu is not modelled")
    z = math.hypot(br.r_pu, br.x_pu)
    pp.create_transformer_from_parameters(
        pn, idx[int(br.from_bus)], idx[int(br.to_bus)], sn_mva=net.base_mva,
        vn_hv_kv=float(net.bus.loc[br.from_bus, "vn_kv"]),
        vn_lv_kv=float(net.bus.loc[br.to_bus, "vn_kv"]),
        vkr_percent=br.r_pu * 100, vk_percent=z * 100, pfe_kw=0.0, i0_percent=0.0,
        shift_degree=br.shift_deg, tap_side="hv", tap_neutral=0, tap_min=0, tap_max=1,
        tap_pos=1, tap_step_percent=(br.ratio - 1.0) * 100, tap_changer_type="Ratio",
        max_loading_percent=br.rate_mva / net.base_mva * 100 if br.rate_mva > 0 else 1e9,
    )  # fmt: skip


def pandapower_min_loss(net: Network, control: str) -> tuple[float, np.ndarray]:
    """Run pandapower's OPF; (losses MW, the variables: regulator vm pu or Q Mvar, net order)."""
    pn = to_pandapower(net, control)
    pp.runopp(pn, calculate_voltage_angles=True)
    if not pn.OPF_converged:
        raise RuntimeError(f"{net.name}: pandapower OPF did not converge")
    x = pn.res_gen.vm_pu.to_numpy() if control == "vm" else pn.res_sgen.q_mvar.to_numpy()
    return float(pn.res_line.pl_mw.sum() + pn.res_trafo.pl_mw.sum()), x
