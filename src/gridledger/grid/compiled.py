"""A network compiled to per-unit arrays: the form every solver works on.

Compiling once and solving many times is what makes batched power flows cheap: the admittance
matrices and index sets do not change between candidate operating points of an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .network import GenRole, Network, RegulatorControl, validate

BUS_PQ, BUS_PV, BUS_REF = 1, 2, 3


@dataclass(frozen=True)
class CompiledNetwork:
    """Per-unit arrays on ``base_mva``; bus positions follow ``bus_ids``.

    ``sbus_fixed`` is the net injection (generation - load + shunt conductance is in Ybus) that
    does not depend on the solver's choices: every generator's P and the Q of PQ generators and
    SVCs at their current values, minus loads.
    """

    name: str
    base_mva: float
    bus_ids: np.ndarray  # (nb,) case bus numbers
    vn_kv: np.ndarray  # (nb,)
    vmin_pu: np.ndarray
    vmax_pu: np.ndarray
    ybus: sp.csr_matrix  # (nb, nb) complex
    yf: sp.csr_matrix  # (nl, nb) branch current at the from end
    yt: sp.csr_matrix  # (nl, nb) branch current at the to end
    branch_from: np.ndarray  # (nl,) bus positions
    branch_to: np.ndarray
    rate_pu: np.ndarray  # (nl,) 0 = unlimited
    bus_type: np.ndarray  # (nb,) BUS_PQ / BUS_PV / BUS_REF
    ref: int  # angle reference bus position
    pv: np.ndarray  # positions of PV buses (regulator generators)
    pq: np.ndarray  # positions of PQ buses
    gen_bus: np.ndarray  # (ng,) bus position of each generator
    gen_p: np.ndarray  # (ng,) pu
    gen_q: np.ndarray  # (ng,) pu (used for PQ generators; start value for others)
    gen_vm: np.ndarray  # (ng,) pu voltage set-point (slack and regulators)
    gen_sn: np.ndarray  # (ng,) pu rating
    gen_qmin: np.ndarray
    gen_qmax: np.ndarray
    gen_role: np.ndarray  # (ng,) str
    slack_weight: np.ndarray  # (ng,) normalised to sum 1 over generators
    load_p: np.ndarray  # (nb,) pu per bus
    load_q: np.ndarray
    svc_bus: np.ndarray  # (ns,) bus positions
    svc_qmin: np.ndarray  # (ns,) pu
    svc_qmax: np.ndarray
    svc_q: np.ndarray
    # Phase shift of each branch (degrees, from side), for the power flow's start angles; an
    # empty array (networks compiled before this field existed) means no shifts.
    branch_shift_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Shunt conductance per bus (pu) that models branches' no-load losses (a transformer's
    # magnetizing branch); already in ``ybus``, kept apart to report those losses.
    no_load_g_pu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # How the regulators run when a power flow is not told (Network.regulator_control).
    regulator_control: RegulatorControl = "vm"

    @property
    def n_bus(self) -> int:
        return int(self.bus_ids.size)

    @property
    def n_branch(self) -> int:
        return int(self.branch_from.size)

    def sbus(self, gen_q: np.ndarray | None = None, svc_q: np.ndarray | None = None) -> np.ndarray:
        """Specified complex injection per bus (pu) for the given generator and SVC Q."""
        nb = self.n_bus
        gq = self.gen_q if gen_q is None else gen_q
        sq = self.svc_q if svc_q is None else svc_q
        p = np.bincount(self.gen_bus, weights=self.gen_p, minlength=nb) - self.load_p
        q = np.bincount(self.gen_bus, weights=gq, minlength=nb) - self.load_q
        if self.svc_bus.size:
            q = q + np.bincount(self.svc_bus, weights=sq, minlength=nb)
        result: np.ndarray = p + 1j * q
        return result


def build_admittance(net: Network) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Ybus, Yf, Yt with the standard pi model (MATPOWER ``makeYbus`` conventions)."""
    pos = net.bus_position()
    nb = len(pos)
    br = net.branch
    nl = len(br)
    f = np.array([pos[int(b)] for b in br.from_bus], dtype=np.int64)
    t = np.array([pos[int(b)] for b in br.to_bus], dtype=np.int64)
    ys = 1.0 / (br.r_pu.to_numpy(float) + 1j * br.x_pu.to_numpy(float))
    bc = br.b_pu.to_numpy(float)
    ratio = br.ratio.to_numpy(float).copy()
    ratio[ratio == 0] = 1.0
    tap = ratio * np.exp(1j * np.deg2rad(br.shift_deg.to_numpy(float)))
    ytt = ys + 1j * bc / 2
    yff = ytt / (tap * np.conj(tap))
    yft = -ys / np.conj(tap)
    ytf = -ys / tap

    ysh = np.zeros(nb, dtype=complex)
    if len(net.shunt):
        sh_bus = np.array([pos[int(b)] for b in net.shunt.bus], dtype=np.int64)
        gs = net.shunt.g_mw.to_numpy(float) / net.base_mva
        bs = net.shunt.b_mvar.to_numpy(float) / net.base_mva
        np.add.at(ysh, sh_bus, gs + 1j * bs)

    rows = np.arange(nl)
    yf = sp.csr_matrix(
        (np.concatenate([yff, yft]), (np.concatenate([rows, rows]), np.concatenate([f, t]))),
        shape=(nl, nb),
    )
    yt = sp.csr_matrix(
        (np.concatenate([ytf, ytt]), (np.concatenate([rows, rows]), np.concatenate([f, t]))),
        shape=(nl, nb),
    )
    cf = sp.csr_matrix((np.ones(nl), (rows, f)), shape=(nl, nb))
    ct = sp.csr_matrix((np.ones(nl), (rows, t)), shape=(nl, nb))
    ybus = (cf.T @ yf + ct.T @ yt + sp.diags(ysh)).tocsr()
    return ybus, yf.tocsr(), yt.tocsr()


def compile_network(net: Network) -> CompiledNetwork:
    """Validate ``net`` and turn it into per-unit arrays (raises ``NetworkError`` if invalid)."""
    validate(net)
    base = net.base_mva
    pos = net.bus_position()
    nb = len(pos)
    ybus, yf, yt = build_admittance(net)

    gen = net.gen
    gen_bus = np.array([pos[int(b)] for b in gen.bus], dtype=np.int64)
    role = gen.role.to_numpy(str)
    bus_type = np.full(nb, BUS_PQ, dtype=np.int8)
    bus_type[gen_bus[role == GenRole.REGULATOR]] = BUS_PV
    slack_pos = gen_bus[role == GenRole.SLACK]
    bus_type[slack_pos] = BUS_REF
    ref = int(slack_pos[0])
    # Further slack generators (if any) hold their voltage like regulators; the first is the
    # angle reference.
    bus_type[slack_pos[1:]] = BUS_PV

    weight = gen.slack_weight.to_numpy(float).copy()
    if weight.sum() <= 0:
        weight = (role == GenRole.SLACK).astype(float)
    weight = weight / weight.sum()

    load_p = np.zeros(nb)
    load_q = np.zeros(nb)
    if len(net.load):
        lb = np.array([pos[int(b)] for b in net.load.bus], dtype=np.int64)
        np.add.at(load_p, lb, net.load.p_mw.to_numpy(float) / base)
        np.add.at(load_q, lb, net.load.q_mvar.to_numpy(float) / base)

    svc = net.svc
    svc_bus = np.array([pos[int(b)] for b in svc.bus], dtype=np.int64)

    no_load_g = np.zeros(nb)
    if net.no_load_shunts:
        sh = net.shunt[net.shunt["name"].isin(net.no_load_shunts)]
        sh_bus = np.array([pos[int(b)] for b in sh.bus], dtype=np.int64)
        np.add.at(no_load_g, sh_bus, sh.g_mw.to_numpy(float) / base)

    return CompiledNetwork(
        name=net.name,
        base_mva=base,
        bus_ids=net.bus.index.to_numpy(),
        vn_kv=net.bus.vn_kv.to_numpy(float),
        vmin_pu=net.bus.vmin_pu.to_numpy(float),
        vmax_pu=net.bus.vmax_pu.to_numpy(float),
        ybus=ybus,
        yf=yf,
        yt=yt,
        branch_from=np.array([pos[int(b)] for b in net.branch.from_bus], dtype=np.int64),
        branch_to=np.array([pos[int(b)] for b in net.branch.to_bus], dtype=np.int64),
        rate_pu=net.branch.rate_mva.to_numpy(float) / base,
        bus_type=bus_type,
        ref=ref,
        pv=np.flatnonzero(bus_type == BUS_PV),
        pq=np.flatnonzero(bus_type == BUS_PQ),
        gen_bus=gen_bus,
        gen_p=gen.p_mw.to_numpy(float) / base,
        gen_q=gen.q_mvar.to_numpy(float) / base,
        gen_vm=gen.vm_pu.to_numpy(float),
        gen_sn=gen.sn_mva.to_numpy(float) / base,
        gen_qmin=gen.qmin_mvar.to_numpy(float) / base,
        gen_qmax=gen.qmax_mvar.to_numpy(float) / base,
        gen_role=role,
        slack_weight=weight,
        load_p=load_p,
        load_q=load_q,
        svc_bus=svc_bus,
        svc_qmin=svc.qmin_mvar.to_numpy(float) / base,
        svc_qmax=svc.qmax_mvar.to_numpy(float) / base,
        svc_q=svc.q_mvar.to_numpy(float) / base,
        branch_shift_deg=net.branch.shift_deg.to_numpy(float),
        no_load_g_pu=no_load_g,
        regulator_control=net.regulator_control,
    )
