"""Trajectories with planted hops and concerted chains: known answers for tests,
benchmarks and demos.

Mobile ions sit on a lattice of sites (fractional grid in an optionally skewed cell,
so hops cross periodic boundaries and the cell need not be orthogonal), vibrate with
Gaussian noise, and hop between neighbouring empty sites along straight paths. A
*chain* of n hops is a concerted group: ion 1 hops into a vacancy, ion 2 into the site
ion 1 left, and so on, each starting ``lag`` frames after the previous, so their
transits overlap. Chains and single hops are separated in time by more than any
Gaussian width, so the true groups are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iondiff_core.trajectory import Trajectory


@dataclass
class PlantedHop:
    """One planted hop: transit frames ``start``..``end`` inclusive (0-based)."""

    ion: int
    start: int
    end: int
    origin_A: np.ndarray
    target_A: np.ndarray
    open_ended: bool = False

    @property
    def length_A(self) -> float:
        return float(np.linalg.norm(self.target_A - self.origin_A))


@dataclass
class Synthetic:
    """A generated trajectory with its known hops and concerted groups."""

    trajectory: Trajectory
    hops: list[PlantedHop]
    groups: list[list[int]] = field(default_factory=list)  # indices into hops
    mobile: str = "Li"


def skewed_cell(edge_A: float, skew: float = 0.25) -> np.ndarray:
    """A triclinic cell (rows are lattice vectors, Å) with all edges ``edge_A`` long."""
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([skew, np.sqrt(1 - skew**2), 0.0])
    c = np.array([skew * 0.6, skew * 0.4, 0.0])
    c[2] = np.sqrt(1 - c[0] ** 2 - c[1] ** 2)
    return edge_A * np.array([a, b, c])


def make_synthetic(
    n_frames: int = 2000,
    n_mobile: int = 16,
    grid: int = 4,
    spacing_A: float = 2.5,
    skew: float = 0.25,
    vib_A: float = 0.1,
    timestep_fs: float = 10.0,
    temperature_K: float = 600.0,
    transit_frames: tuple[int, int] = (6, 14),
    chain_sizes: tuple[int, ...] = (1, 1, 2, 3, 4),
    lag_frames: int = 3,
    long_walker_hops: int = 0,
    open_end_hop: bool = False,
    n_framework: int = 8,
    mobile: str = "Li",
    framework: str = "S",
    seed: int = 0,
) -> Synthetic:
    """Generate a trajectory with planted hops.

    Parameters
    ----------
    n_frames : int
        Frames T.
    n_mobile : int
        Mobile ions; must be below ``grid**3`` so vacancies exist.
    grid : int
        Sites per cell edge; the cell edge is ``grid * spacing_A``.
    spacing_A : float
        Site spacing in Å (the length of every planted hop).
    skew : float
        0 gives a cubic cell; > 0 a triclinic one.
    vib_A : float
        Standard deviation of the thermal noise per Cartesian component, Å.
    transit_frames : (int, int)
        Range of transit durations in frames.
    chain_sizes : tuple of int
        Sizes of the concerted chains to plant, in time order (1 = an isolated hop).
    lag_frames : int
        Delay between consecutive hops of a chain (smaller than a transit, so they overlap).
    long_walker_hops : int
        If > 0, one extra ion walks this many hops through distinct sites, one hop
        per separate time slot, in a straight line (it visits ``long_walker_hops + 1``
        sites, testing that K is not capped at 10).
    open_end_hop : bool
        Plant a hop that is still in transit at the last frame.
    """
    rng = np.random.default_rng(seed)
    n_sites = grid**3
    if n_mobile >= n_sites:
        raise ValueError("need fewer mobile ions than sites")
    cell = skewed_cell(grid * spacing_A, skew) if skew else np.eye(3) * grid * spacing_A
    site_frac = np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), -1).reshape(-1, 3) / grid
    occupant = -np.ones(n_sites, dtype=int)
    home = rng.choice(n_sites, n_mobile, replace=False)
    occupant[home] = np.arange(n_mobile)
    current = home.copy()
    # Unwrapped fractional position of each ion's current site (changes by +-1/grid per hop).
    where = site_frac[home].copy()

    hops: list[PlantedHop] = []
    groups: list[list[int]] = []
    # Each ion's piecewise path: list of (frame, unwrapped fractional position) knots.
    knots: list[list[tuple[int, np.ndarray]]] = [[(0, where[i].copy())] for i in range(n_mobile)]

    def site_index(frac):
        g = np.round(np.mod(frac, 1.0) * grid).astype(int) % grid
        return (g[0] * grid + g[1]) * grid + g[2]

    def plant(ion, start, duration, step):
        origin = where[ion].copy()
        target = origin + step
        knots[ion].append((start - 1, origin))
        knots[ion].append((start + duration, target))
        occupant[current[ion]] = -1
        current[ion] = site_index(target)
        occupant[current[ion]] = ion
        where[ion] = target
        hops.append(PlantedHop(ion, start, start + duration - 1, origin @ cell, target @ cell))
        return len(hops) - 1

    steps = np.concatenate([np.eye(3), -np.eye(3)]) / grid
    slots = list(chain_sizes) + [1] * long_walker_hops
    slot_len = (n_frames - 40) // max(1, len(slots) + int(open_end_hop))
    max_dur = transit_frames[1]
    if slot_len < 4 * max_dur + lag_frames * max(chain_sizes, default=1) + 20:
        raise ValueError("too many planted events for the number of frames")

    walker = None
    if long_walker_hops:
        walker = int(np.argmax(occupant >= 0))  # any ion; its line of sites is cleared below
        walker = occupant[walker]
        axis_step = steps[0]
        # Clear the walker's straight line so every hop lands on an empty site.
        probe = where[walker].copy()
        for _ in range(min(long_walker_hops, grid - 1)):
            probe = probe + axis_step
            s = site_index(probe)
            if occupant[s] >= 0 and occupant[s] != walker:
                other = occupant[s]
                free = np.flatnonzero(occupant < 0)
                free = free[free != site_index(probe)]
                occupant[s] = -1
                new = free[0]
                occupant[new] = other
                current[other] = new
                where[other] = site_frac[new]
                knots[other][0] = (0, site_frac[new].copy())

    for k, size in enumerate(slots):
        t0 = 20 + k * slot_len + int(rng.integers(0, max(1, slot_len - 4 * max_dur - lag_frames * size)))
        if k >= len(chain_sizes):
            # Long walker: one hop per slot along +a; the line wraps after `grid` hops,
            # so the walker keeps reaching new unwrapped sites.
            dur = int(rng.integers(transit_frames[0], transit_frames[1] + 1))
            if occupant[site_index(where[walker] + steps[0])] >= 0:
                continue  # a chain moved an ion onto the walker's line: skip this slot
            idx = plant(walker, t0, dur, steps[0])
            groups.append([idx])
            continue
        # A chain: ion_1 into a vacancy, then each next ion into the site just left.
        chain = _find_chain(size, occupant, current, where, steps, site_index, rng, exclude=walker)
        if chain is None:
            continue
        members = []
        for j, (ion, step) in enumerate(chain):
            dur = int(rng.integers(transit_frames[0], transit_frames[1] + 1))
            members.append(plant(ion, t0 + j * lag_frames, dur, step))
        groups.append(members)

    if open_end_hop:
        for ion in rng.permutation(n_mobile):
            if ion == walker:
                continue
            free = [st for st in steps if occupant[site_index(where[ion] + st)] < 0]
            if free:
                dur = transit_frames[1]
                start = n_frames - dur // 2  # cut at mid-transit by the end of the run
                knots[ion].append((start - 1, where[ion].copy()))
                target = where[ion] + free[0]
                knots[ion].append((start + dur, target))
                hops.append(PlantedHop(int(ion), start, n_frames - 1, where[ion] @ cell, target @ cell, open_ended=True))
                groups.append([len(hops) - 1])
                where[ion] = target
                break

    frac = np.empty((n_frames, n_mobile, 3))
    t = np.arange(n_frames)
    for ion in range(n_mobile):
        ks = sorted(knots[ion], key=lambda kv: kv[0])
        kt = np.array([k[0] for k in ks] + [max(n_frames, ks[-1][0] + 1)])
        kp = np.array([k[1] for k in ks] + [ks[-1][1]])
        for d in range(3):
            frac[:, ion, d] = np.interp(t, kt, kp[:, d])
    cart = frac @ cell + rng.normal(scale=vib_A, size=frac.shape)
    frac = cart @ np.linalg.inv(cell)

    fw_frac = rng.random((n_framework, 3))
    fw = fw_frac @ cell + rng.normal(scale=vib_A, size=(n_frames, n_framework, 3))
    fw_frac = fw @ np.linalg.inv(cell)
    positions = np.concatenate([frac, fw_frac], axis=1)
    positions -= np.floor(positions)  # wrap into the cell as MD codes write it
    species = [mobile] * n_mobile + [framework] * n_framework
    traj = Trajectory(positions, cell, species, timestep_fs=timestep_fs, temperature_K=temperature_K, source="synthetic")
    hops_sorted = sorted(range(len(hops)), key=lambda i: (hops[i].start, hops[i].ion))
    remap = {old: new for new, old in enumerate(hops_sorted)}
    return Synthetic(
        trajectory=traj,
        hops=[hops[i] for i in hops_sorted],
        groups=[sorted(remap[i] for i in g) for g in groups],
        mobile=mobile,
    )


def _find_chain(size, occupant, current, where, steps, site_index, rng, exclude=None):
    """Ions and steps of a vacancy-following chain of ``size`` hops, or None."""
    vacancies = rng.permutation(np.flatnonzero(occupant < 0))
    for vac in vacancies:
        chain = []
        used = {exclude}
        hole = vac
        for _ in range(size):
            options = []
            for st in rng.permutation(len(steps)):
                step = steps[st]
                for ion in range(len(current)):
                    if ion in used:
                        continue
                    if site_index(where[ion] + step) == hole:
                        options.append((ion, step))
            if not options:
                break
            ion, step = options[0]
            chain.append((ion, step))
            used.add(ion)
            hole = current[ion]
        if len(chain) == size:
            return chain
    return None


def match_hops(ion, start, end, reference, tol: int = 3) -> list[tuple[int, int]]:
    """Pair found hops with reference hops: same ion, both boundaries within ``tol`` frames.

    Parameters
    ----------
    ion, start, end : int arrays
        The found hops (0-based frames, inclusive).
    reference : list of objects with ``ion``, ``start``, ``end`` (e.g. :class:`PlantedHop`)
    Returns
    -------
    list of (reference index, found index), each found hop used at most once.
    """
    ion, start, end = (np.asarray(a) for a in (ion, start, end))
    pairs, used = [], np.zeros(len(ion), bool)
    for r, h in enumerate(reference):
        cand = np.flatnonzero((ion == h.ion) & (np.abs(start - h.start) <= tol) & (np.abs(end - h.end) <= tol) & ~used)
        if cand.size:
            best = cand[np.argmin(np.abs(start[cand] - h.start) + np.abs(end[cand] - h.end))]
            used[best] = True
            pairs.append((r, int(best)))
    return pairs


def make_independent_walkers(
    n_frames: int = 20000,
    n_mobile: int = 64,
    hops_per_ion: int = 20,
    spacing_A: float = 2.5,
    grid: int = 6,
    vib_A: float = 0.1,
    timestep_fs: float = 10.0,
    transit_frames: tuple[int, int] = (6, 14),
    n_framework: int = 8,
    seed: int = 0,
    out: str | Path | None = None,
    dtype=np.float64,
    chunk_bytes: int = 64 << 20,
) -> Synthetic:
    """Ions that random-walk over many sites of a cubic lattice with no coupling at all.

    Each ion makes ``hops_per_ion`` nearest-neighbour hops at times drawn independently
    of every other ion (one hop per randomly chosen slot of its own slot grid, which
    starts at the ion's own random phase, so the hop times are stationary), so any
    overlap in time between ions is chance: the null model must call it "chance". Ions
    do not exclude one another (they only need to be independent).

    The positions are generated ``chunk_bytes`` of frames at a time (the same numbers
    whatever the chunk) into an array of ``dtype``, or, with ``out``, into a ``.npy`` at
    that path, memory-mapped (the trajectory then holds the map): a run of 10^8
    ion-frames never needs its positions in memory, only one chunk of them.
    """
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * grid * spacing_A
    slot = n_frames // (2 * hops_per_ion + 1)
    if slot < transit_frames[1] + 10:
        raise ValueError("too many hops per ion for the number of frames")
    slots = np.argsort(rng.random((n_mobile, 2 * hops_per_ion)), axis=1)[:, :hops_per_ion]
    slots.sort(axis=1)
    dur = rng.integers(transit_frames[0], transit_frames[1] + 1, size=(n_mobile, hops_per_ion))
    phase = rng.integers(0, slot, size=(n_mobile, 1))
    start = phase + slots * slot + 5 + (rng.random((n_mobile, hops_per_ion)) * (slot - dur - 10)).astype(int)
    dirs = np.concatenate([np.eye(3), -np.eye(3)]) * spacing_A
    step = dirs[rng.integers(0, 6, size=(n_mobile, hops_per_ion))]  # (N, K, 3)
    # Velocity during each transit: step / duration, spread over its frames, then integrated.
    ion = np.repeat(np.arange(n_mobile), hops_per_ion)
    d, s0, v = dur.ravel(), start.ravel(), (step / dur[..., None]).reshape(-1, 3)
    k = np.repeat(np.arange(len(d)), d)
    frames = s0[k] + np.arange(d.sum()) - np.repeat(np.cumsum(d) - d, d)
    order = np.argsort(frames, kind="stable")
    frames, k = frames[order], k[order]
    home = rng.integers(0, grid, size=(n_mobile, 3)) * spacing_A
    # The noise of the mobile ions, then the framework's: two copies of the generator, the
    # second moved past the first's draws (drawn and dropped a chunk at a time).
    n_atoms = n_mobile + n_framework
    chunk = max(1, chunk_bytes // (n_atoms * 3 * 8))
    mobile_rng = np.random.default_rng()
    mobile_rng.bit_generator.state = rng.bit_generator.state
    for a in range(0, n_frames, chunk):
        rng.normal(scale=vib_A, size=(min(chunk, n_frames - a), n_mobile, 3))
    fw_home = rng.random((n_framework, 3)) @ cell
    inv = np.linalg.inv(cell)
    shape = (n_frames, n_atoms, 3)
    positions = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape) if out else np.empty(shape, dtype)
    carry = np.zeros((n_mobile, 3))
    for a in range(0, n_frames, chunk):
        b = min(n_frames, a + chunk)
        vel = np.zeros((b - a, n_mobile, 3))
        lo, hi = np.searchsorted(frames, [a, b])
        np.add.at(vel, (frames[lo:hi] - a, ion[k[lo:hi]]), v[k[lo:hi]])
        vel[0] += carry  # the walk so far: the cumulative sum runs on as if in one piece
        walk = np.cumsum(vel, axis=0)
        carry = walk[-1]
        cart = home + walk + mobile_rng.normal(scale=vib_A, size=vel.shape)
        fw = fw_home + rng.normal(scale=vib_A, size=(b - a, n_framework, 3))
        frac = np.concatenate([cart, fw], axis=1) @ inv
        positions[a:b] = frac - np.floor(frac)
    if out:
        positions.flush()
    species = ["Li"] * n_mobile + ["S"] * n_framework
    traj = Trajectory(positions, cell, species, timestep_fs=timestep_fs, temperature_K=600.0, source="independent walkers")
    pos0 = home[ion] + np.cumsum(step, axis=1).reshape(-1, 3) - step.reshape(-1, 3)
    hops = [PlantedHop(int(ion[h]), int(s0[h]), int(s0[h] + d[h] - 1), pos0[h], pos0[h] + step.reshape(-1, 3)[h])
            for h in np.lexsort((ion, s0))]
    return Synthetic(traj, hops, [[i] for i in range(len(hops))])
