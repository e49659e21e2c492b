"""The trajectory data model and periodic unwrapping (METHOD.md sections 0 and 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iondiff_core.errors import InputError

#: Default preference order for the mobile species (METHOD.md section 0).
MOBILE_PREFERENCE = ("Li", "Na", "K", "Ag", "Cu", "F", "Cl", "Br", "I", "O", "H")
#: Plausible temperatures, K (exclusive bounds): outside, a value is a typo or corrupt.
TEMPERATURE_RANGE_K = (0.0, 1e5)
#: Plausible times between stored frames, fs (inclusive bounds).
TIMESTEP_RANGE_FS = (0.01, 1e5)
#: Plausible length of a cell vector, Å: outside it a header is corrupt (or hostile), and
#: the arithmetic downstream would overflow or divide by zero.
CELL_EDGE_RANGE_A = (0.5, 1e5)
#: Smallest volume / (|a| |b| |c|) of a plausible cell (about the product of the sines of
#: its angles): a flatter cell is degenerate.
MIN_CELL_SHAPE = 1e-6


def cell_problem(cells: np.ndarray) -> tuple[int, str] | None:
    """The first implausible cell of a stack and why, or None when every cell is fine.

    Parameters
    ----------
    cells : ndarray, shape (T, 3, 3) or (3, 3)
        Lattice vectors as rows, Å.

    Returns
    -------
    (index, reason) or None
        ``reason`` is one phrase for a message that names the file and line.
    """
    c = np.asarray(cells, dtype=float).reshape(-1, 3, 3)
    with np.errstate(all="ignore"):
        lengths = np.linalg.norm(c, axis=2)
        volume = np.abs(np.linalg.det(c))
        shape = volume / np.prod(lengths, axis=1)
    lo, hi = CELL_EDGE_RANGE_A
    finite = np.isfinite(c).all(axis=(1, 2))
    sized = ((lengths >= lo) & (lengths <= hi)).all(axis=1)
    bad = ~finite | ~sized | ~(shape >= MIN_CELL_SHAPE)  # NaN shapes are bad too
    if not bad.any():
        return None
    t = int(np.flatnonzero(bad)[0])
    if not finite[t]:
        return t, "the cell holds non-finite numbers"
    if not sized[t]:
        edge = lengths[t][np.argmax(np.abs(np.log10(np.maximum(lengths[t], 1e-300))))]
        return t, (f"a cell vector is {edge:.3g} Å long (plausible: {lo:g}-{hi:.0e} Å): "
                   "a corrupt header or a wrong scale factor")
    return t, f"the cell vectors are (nearly) linearly dependent (volume {volume[t]:.3g} Å^3)"



@dataclass
class Trajectory:
    """An MD trajectory as read from disk.

    Parameters
    ----------
    positions_frac : ndarray, shape (T, N, 3)
        Fractional coordinates as stored (wrapped or not), float64 (or float32 when
        read with ``dtype=np.float32``).
    cells : ndarray, shape (T, 3, 3)
        Lattice vectors as rows, in Å, one cell per frame. A fixed cell is a
        broadcast view of one (3, 3) matrix, so it costs no memory.
    species : list of str, length N
        Chemical symbol of every atom, in file order.
    timestep_fs : float or None
        Time between stored frames in fs (POTIM x NBLOCK for VASP).
    temperature_K : float or None
        Simulation temperature in K (TEBEG for VASP).
    source : str
        Where the trajectory came from (a path), for messages.
    warnings : list of str
        Problems recovered from while reading (e.g. a dropped truncated frame).
    unwrapped : bool
        The positions are already unwrapped (e.g. LAMMPS image flags applied), so
        :func:`unwrap` converts them frame by frame without folding steps.
    atom_indices : ndarray of int, optional
        File indices (0-based) of the atoms held, when the reader kept only some
        (``keep='mobile'``); None when every atom of the file is held.
    framework_drift_A : ndarray, shape (T, 3), optional
        Mean unwrapped displacement (Å, from frame 0) of the atoms the reader dropped,
        so that drift removal works without holding them.
    file_species : dict of str to int, optional
        Number of atoms of each species in the file, when the reader kept only some
        (see :attr:`file_composition`); None when every atom is held.
    """

    positions_frac: np.ndarray
    cells: np.ndarray
    species: list[str]
    timestep_fs: float | None = None
    temperature_K: float | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    unwrapped: bool = False
    atom_indices: np.ndarray | None = None
    framework_drift_A: np.ndarray | None = None
    file_species: dict[str, int] | None = None
    positions_released: bool = False

    def __post_init__(self):
        pos = np.asarray(self.positions_frac)
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise InputError(f"{self.source}: positions must have shape (frames, atoms, 3), got {pos.shape}")
        cells = np.asarray(self.cells, dtype=float)
        if cells.shape == (3, 3):
            cells = np.broadcast_to(cells, (pos.shape[0], 3, 3))
        if cells.shape != (pos.shape[0], 3, 3):
            raise InputError(f"{self.source}: cells must have shape (frames, 3, 3), got {cells.shape}")
        if len(self.species) != pos.shape[1]:
            raise InputError(f"{self.source}: {len(self.species)} species labels for {pos.shape[1]} atoms")
        if self.atom_indices is not None and len(self.atom_indices) != pos.shape[1]:
            raise InputError(f"{self.source}: {len(self.atom_indices)} atom indices for {pos.shape[1]} atoms")
        if self.framework_drift_A is not None and np.shape(self.framework_drift_A) != (pos.shape[0], 3):
            raise InputError(f"{self.source}: framework drift must have shape (frames, 3)")
        self.positions_frac = pos
        self.cells = cells

    @property
    def n_frames(self) -> int:
        return self.positions_frac.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions_frac.shape[1]

    @property
    def symbols(self) -> list[str]:
        """Distinct species in order of first appearance."""
        return list(dict.fromkeys(self.species))

    @property
    def composition(self) -> dict[str, int]:
        """Number of atoms of each species, in order of first appearance."""
        return {s: self.species.count(s) for s in self.symbols}

    def release_positions(self) -> None:
        """Free the positions of every frame but the first, once they have been unwrapped
        (:meth:`iondiff_core.pipeline.Session.open` does so for a file it read itself):
        ``positions_frac`` becomes a read-only view repeating frame 0, which costs no
        memory and keeps ``n_frames``; :func:`unwrap` refuses the trajectory from then on."""
        first = np.array(self.positions_frac[:1])
        self.positions_frac = np.broadcast_to(first, self.positions_frac.shape)
        self.positions_released = True

    @property
    def file_composition(self) -> dict[str, int]:
        """Number of atoms of each species in the file (also when only some are held)."""
        return dict(self.file_species) if self.file_species is not None else self.composition

    @property
    def file_n_atoms(self) -> int:
        """Number of atoms in the file (also when only some are held)."""
        return int(sum(self.file_composition.values()))

    @property
    def variable_cell(self) -> bool:
        return bool(self.cells.strides[0] != 0 and not np.allclose(self.cells, self.cells[0]))

    @property
    def volume_A3(self) -> float:
        """Mean cell volume in Å^3."""
        return float(np.mean(np.abs(np.linalg.det(self.cells[:: max(1, self.n_frames // 1000)]))))

    def file_indices(self, atoms: np.ndarray) -> np.ndarray:
        """File indices (0-based) of held atoms ``atoms`` (the same when every atom is held)."""
        atoms = np.asarray(atoms)
        return atoms if self.atom_indices is None else np.asarray(self.atom_indices)[atoms]

    def indices(self, symbol: str) -> np.ndarray:
        """0-based indices of the atoms of one species among the atoms held (file
        indices when every atom is held; see :meth:`file_indices`)."""
        if symbol not in self.symbols:
            raise InputError(
                f"{self.source}: species {symbol!r} is not in the file (it holds {', '.join(self.symbols)})"
            )
        return np.flatnonzero(np.asarray(self.species) == symbol)

    def default_mobile_species(self) -> str:
        """The first of Li, Na, K, Ag, Cu, F, Cl, Br, I, O, H present (METHOD.md section 0)."""
        for s in MOBILE_PREFERENCE:
            if s in self.symbols:
                return s
        raise InputError(
            f"{self.source}: none of {', '.join(MOBILE_PREFERENCE)} is in the file "
            f"(it holds {', '.join(self.symbols)}); choose the mobile species explicitly"
        )

    def mobile_species(self, species: str | None) -> str:
        """Validate a requested mobile species, or pick the default one."""
        if species is None:
            return self.default_mobile_species()
        self.indices(species)
        return species

    def time_ps(self) -> np.ndarray:
        """Time of each frame in ps (requires ``timestep_fs``)."""
        return np.arange(self.n_frames) * self.timestep_ps

    @property
    def timestep_ps(self) -> float:
        if not self.timestep_fs or self.timestep_fs <= 0:
            raise InputError(
                f"{self.source}: the timestep is unknown; give it (fs per stored frame) "
                "or put POTIM and NBLOCK in an INCAR beside the XDATCAR"
            )
        return self.timestep_fs * 1e-3


def unwrap(
    traj: Trajectory, atoms: np.ndarray | None = None, remove_drift: bool = False, dtype=np.float64, out: np.ndarray | None = None
) -> np.ndarray:
    """Unwrapped Cartesian positions in Å (METHOD.md section 1).

    Frame-to-frame fractional steps are folded into [-0.5, 0.5), converted with that
    frame's cell and summed, so any cell shape and a variable cell are handled.

    Parameters
    ----------
    traj : Trajectory
    atoms : array of int, optional
        File indices of the atoms to return; all atoms if None.
    remove_drift : bool
        Subtract the centre-of-mass drift of the framework (all atoms not in ``atoms``,
        equal weights), so a thermostat's net translation does not count as diffusion.
        When the reader dropped the framework (``keep='mobile'``), its drift recorded
        while reading is used.
    dtype : numpy dtype
        Storage type of the result. The sums are done in float64 block by block and
        only stored as ``dtype``, so float32 adds one rounding (~1e-6 relative) per
        position and no drift along the run.
    out : ndarray, optional
        Where to write the result, shape (T, len(atoms), 3) (e.g. a memory-mapped
        ``.npy``); its dtype wins over ``dtype``.

    Returns
    -------
    ndarray, shape (T, len(atoms), 3), ``dtype``, Å
    """
    if traj.positions_released:
        raise InputError(f"{traj.source}: the positions were released after unwrapping; read the trajectory again")
    sel = np.arange(traj.n_atoms) if atoms is None else np.asarray(atoms)
    if out is None:
        out = np.empty((traj.n_frames, len(sel), 3), dtype=dtype)
    elif out.shape != (traj.n_frames, len(sel), 3):
        raise ValueError(f"out must have shape {(traj.n_frames, len(sel), 3)}, got {out.shape}")
    drift = None
    if remove_drift:
        frame = np.setdiff1d(np.arange(traj.n_atoms), sel)
        if frame.size and traj.framework_drift_A is not None:
            raise InputError(
                f"{traj.source}: drift removal needs every framework atom, but the reader kept only some; "
                "read the whole file (keep='all') or analyse one species"
            )
        if frame.size:
            fw = _unwrap_atoms(traj, frame, np.empty((traj.n_frames, frame.size, 3)))
            drift = fw.mean(axis=1)
            drift -= drift[0]
            del fw
        elif traj.framework_drift_A is not None:
            drift = traj.framework_drift_A
    return _unwrap_atoms(traj, sel, out, drift)


def _unwrap_atoms(traj: Trajectory, sel: np.ndarray, out: np.ndarray, drift: np.ndarray | None = None,
                  block_elements: int = 1 << 16) -> np.ndarray:
    """Unwrap into ``out`` in blocks of frames (about ``block_elements`` positions each),
    in float64 with a float64 running sum, so temporaries stay a small fixed size and a
    float32 ``out`` gets one rounding per position; ``drift`` (T, 3) Å is subtracted."""
    n_frames = traj.n_frames
    block_frames = max(1, block_elements // max(1, len(sel)))
    prev = None  # float64 fractional positions of the frame before the block, as read
    last = None  # float64 unwrapped positions of the frame before the block
    for a in range(0, n_frames, block_frames):
        b = min(n_frames, a + block_frames)
        # A copy (fancy indexing): ``out`` may be the positions' own buffer (unwrap_in_place).
        frac = traj.positions_frac[a:b][:, sel, :].astype(np.float64)
        if traj.unwrapped:
            # Already unwrapped (image flags applied): each frame in its own cell.
            cart = np.einsum("tnj,tjk->tnk", frac, traj.cells[a:b], optimize=True)
        else:
            steps = np.diff(frac, axis=0) if prev is None else np.diff(frac, axis=0, prepend=prev[None])
            prev = frac[-1].copy()
            steps -= np.floor(steps + 0.5)  # fold into [-0.5, 0.5)
            # Step t -> t+1 converted with the cell of frame t+1 (the frame it arrives at).
            cart = np.einsum("tnj,tjk->tnk", steps, traj.cells[max(a, 1) : b], optimize=True)
            if a == 0:
                cart = np.concatenate([(frac[0] @ traj.cells[0])[None], cart])
            np.cumsum(cart, axis=0, out=cart)
            if last is not None:
                cart += last
            last = cart[-1].copy()
        if drift is not None:
            cart -= drift[a:b, None, :]
        out[a:b] = cart
    return out


def unwrap_in_place(traj: Trajectory, remove_drift: bool = False) -> np.ndarray:
    """Unwrap every atom held into the trajectory's own position buffer, then release it.

    Same numbers as ``unwrap(traj, remove_drift=remove_drift, dtype=traj.positions_frac.dtype)``
    followed by :meth:`Trajectory.release_positions`, without ever holding the read
    positions and the unwrapped ones side by side: the peak stays one copy of the
    positions plus a block of float64 temporaries. For a trajectory nobody else holds (a
    mobile-only read, where every atom held is mobile). When the buffer cannot be written
    (a read-only memory map, a broadcast view), it unwraps into a new array instead.

    Returns
    -------
    ndarray, shape (T, N, 3), the positions' dtype, Å (unwrapped Cartesian)
    """
    if traj.positions_released:
        raise InputError(f"{traj.source}: the positions were released after unwrapping; read the trajectory again")
    buf = traj.positions_frac
    writable = type(buf) is np.ndarray and buf.flags.writeable and buf.dtype in (np.float32, np.float64)
    if not writable:
        pos = unwrap(traj, remove_drift=remove_drift, dtype=buf.dtype)
        traj.release_positions()
        return pos
    first = np.array(buf[:1])  # frame 0 as read stays (the reference lattice needs it)
    unwrap(traj, remove_drift=remove_drift, out=buf)
    traj.positions_frac = np.broadcast_to(first, buf.shape)
    traj.positions_released = True
    return buf


def minimum_image(vectors_A: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Shortest periodic images of Cartesian vectors (Å) in a (3, 3) cell.

    Exact for any cell: the fractional rounding is followed by a search over the 27
    neighbouring images, which matters for strongly skewed cells.
    """
    v = np.asarray(vectors_A, dtype=float)
    inv = np.linalg.inv(cell)
    frac = v @ inv
    frac -= np.round(frac)
    base = frac @ cell
    shifts = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T @ cell
    cand = base[..., None, :] + shifts
    best = np.argmin(np.einsum("...kj,...kj->...k", cand, cand), axis=-1)
    return np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]


def periodic_images(points_A: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points (Å) wrapped into the cell and their 27 periodic images, with the index of
    the point each image belongs to: a k-d tree over them finds minimum-image neighbours."""
    cell = np.asarray(cell, float)
    frac = np.asarray(points_A, float) @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    shifts = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T
    images = ((frac[None, :, :] + shifts[:, None, :]) @ cell).reshape(-1, 3)
    return images, np.tile(np.arange(len(frac)), len(shifts))
