"""Who the prosumers of a community are and what they consume and generate, slot by slot.

A community's prosumers are the grid's loads: with ``N`` prosumers and ``L`` loads, prosumer
``i`` is load ``i·L // N`` when ``N ≤ L`` (spread over the whole grid) and load ``i mod L``
otherwise (several share one load and split it evenly), at that load's bus, with the
PV (static generators) and storage at the bus split over the bus's loads.  Their power per
15-minute slot comes from the grid's own profiles when the grid is ``simbench:<code>`` (SimBench
ships a year of 15-minute profiles per load and generator), otherwise from the shipped data: the
SCE-56 solar profile (hourly, per unit of rating) scaled to each generator's power, and the
loads at their rated power shaped by the SCE-56 day-ahead price curve (a proxy for demand).
The meter service reads the same profiles per element (:func:`meter_profile`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

from gridledger.agents.meter_profile import Profile, ProfileError
from gridledger.grid.network import Network

SLOTS_PER_DAY = 96
SLOT_MS = 900_000
# the simulated day: 21 June (SimBench profiles start on 1 January, 00:00)
SIMBENCH_DAY = 171


@dataclass(frozen=True)
class CommunityProfiles:
    """Prosumer ``i`` sits at ``bus[i]`` on load row ``load_row[i]`` of the network, with the
    generator ``gen_name[i]`` at its bus (or "" if it has none); ``load_kw[i, k]`` and
    ``pv_kw[i, k]`` are its demand and generation in slot ``k``; ``grid_load_mw[j, k]`` and
    ``grid_gen_mw[g, k]`` are every load's and generator's power (the operating point)."""

    bus: np.ndarray
    load_row: np.ndarray
    gen_name: list[str]
    load_kw: np.ndarray
    pv_kw: np.ndarray
    grid_load_mw: np.ndarray
    grid_gen_mw: np.ndarray
    source: str


def community_profiles(
    grid: str, net: Network, prosumers: int, first_slot: int, slots: int
) -> CommunityProfiles:
    """The prosumers' buses, generators and per-slot power (see the module docstring)."""
    load_mw, gen_mw, source = _grid_profiles(grid, net, first_slot, slots)
    n_loads = len(net.load)
    load_bus = net.load.bus.to_numpy().astype(int)
    gen_bus = net.gen.bus.to_numpy().astype(int)
    gen_is_pv = (net.gen.role.to_numpy() != "slack") & (gen_mw.max(axis=1) > 0)
    # spread over the whole grid when there are fewer prosumers than loads; cycle otherwise
    if prosumers <= n_loads:
        rows = np.arange(prosumers) * n_loads // prosumers
    else:
        rows = np.arange(prosumers) % n_loads
    sharing = np.bincount(rows, minlength=n_loads)  # prosumers per load
    loads_at_bus: dict[int, int] = {}
    for b in load_bus:
        loads_at_bus[int(b)] = loads_at_bus.get(int(b), 0) + 1
    load_kw = np.empty((prosumers, slots))
    pv_kw = np.zeros((prosumers, slots))
    gen_name = []
    for i, j in enumerate(rows):
        b = int(load_bus[j])
        load_kw[i] = 1000 * load_mw[j] / sharing[j]
        at = np.flatnonzero((gen_bus == b) & gen_is_pv)
        if at.size:
            pv_kw[i] = 1000 * gen_mw[at].sum(axis=0) / loads_at_bus[b] / sharing[j]
        gen_name.append(str(net.gen["name"].iloc[at[0]]) if at.size else "")
    return CommunityProfiles(
        load_bus[rows], rows, gen_name, load_kw, pv_kw, load_mw, gen_mw, source
    )


def _grid_profiles(
    grid: str, net: Network, first_slot: int, slots: int
) -> tuple[np.ndarray, np.ndarray, str]:
    if grid.startswith("simbench:"):
        return _simbench_profiles(grid.split(":", 1)[1], net, first_slot, slots)
    steps = (np.arange(slots) + first_slot) % SLOTS_PER_DAY
    hour = steps // 4
    solar = _column("solar_profile_24h.csv", "solar_output")
    price = _column("energy_price_24h.csv", "energy_price")
    shape = price / price.max()
    load = net.load.p_mw.to_numpy()[:, None] * shape[hour][None, :]
    rating = np.where(net.gen.role.to_numpy() == "slack", 0.0, net.gen.sn_mva.to_numpy())
    gen = rating[:, None] * (solar[hour] / max(solar.max(), 1e-9))[None, :]
    return load, gen, "shipped SCE-56 solar and demand shapes"


def _column(name: str, column: str) -> np.ndarray:
    text = resources.files("gridledger.data.sce56").joinpath(name).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return np.array([float(r[column]) for r in rows])


def _simbench_profiles(
    code: str, net: Network, first_slot: int, slots: int
) -> tuple[np.ndarray, np.ndarray, str]:
    import simbench

    sb = simbench.get_simbench_net(code)
    # absolute power = the element's rated p_mw x its relative profile, taken at the simulated
    # steps only: what simbench.get_absolute_values gives, without materializing a year of
    # every element (GBs on an MV+LV grid)
    rel_load, rel_gen = sb.profiles["load"], sb.profiles["renewables"]
    start = SIMBENCH_DAY * SLOTS_PER_DAY + first_slot
    steps = (start + np.arange(slots)) % len(rel_load)
    loads = sb.load.set_index(sb.load.name.astype(str))
    sgens = sb.sgen.set_index(sb.sgen.name.astype(str))
    load = np.zeros((len(net.load), slots))
    for j, name in enumerate(net.load["name"].astype(str)):
        if name in loads.index:
            row = loads.loc[name]
            load[j] = row.p_mw * rel_load[f"{row.profile}_pload"].to_numpy()[steps]
    gen = np.zeros((len(net.gen), slots))
    for g, name in enumerate(net.gen["name"].astype(str)):
        if name in sgens.index and sgens.loc[name].profile in rel_gen:
            row = sgens.loc[name]
            gen[g] = row.p_mw * rel_gen[row.profile].to_numpy()[steps]
    return load, gen, f"SimBench profiles of {code}, day {SIMBENCH_DAY + 1} of the year"


DAY_MS = 86_400_000


def meter_profile(
    grid: str, net: Network, meters: list[str], start_ms: int, slots: int, slot_ms: int
) -> Profile:
    """Readings for ``gridledger meter serve --profiles grid``: each meter is named like a load
    (it imports) or a generator (it exports) of ``net``, and reads the energy of that element
    in each market slot, from the same profiles as :func:`community_profiles` — SimBench's for
    ``simbench:<code>``, the shipped SCE-56 shapes otherwise.

    Slot ``i`` starts at ``start_ms + i·slot_ms`` and takes the power of the 15-minute profile
    step it starts in (counted from the UTC midnight before ``start_ms``), times its length, so
    a chain with other slot lengths reads the same day.  Raises :class:`ProfileError` naming a
    meter that is no load or generator, or the external grid.
    """
    if slots < 1:
        raise ProfileError(f"need at least one slot, got {slots}")
    if start_ms % slot_ms:
        raise ProfileError(f"{start_ms} is not the start of a {slot_ms // 1000} s slot")
    starts = [start_ms + i * slot_ms for i in range(slots)]
    day0 = start_ms // DAY_MS * DAY_MS
    steps = np.array([(s - day0) // SLOT_MS for s in starts])
    load_mw, gen_mw, _ = _grid_profiles(grid, net, int(steps[0]), int(steps[-1] - steps[0]) + 1)
    at = steps - steps[0]
    kwh_per_mw = 1000 * slot_ms / 3_600_000
    loads = {str(n): j for j, n in enumerate(net.load["name"])}
    gens = {str(n): g for g, n in enumerate(net.gen["name"])}
    kwh: dict[str, list[float]] = {}
    for name in meters:
        if name in loads:
            kwh[name] = list(load_mw[loads[name], at] * kwh_per_mw)
        elif name in gens and net.gen.role.iloc[gens[name]] == "slack":
            raise ProfileError(f"meter {name!r}: that is the external grid of {grid}, no meter")
        elif name in gens:
            kwh[name] = list(-gen_mw[gens[name], at] * kwh_per_mw)
        else:
            raise ProfileError(f"meter {name!r}: {grid} has no load or generator of that name")
    return Profile(slot_ms, starts, kwh)
