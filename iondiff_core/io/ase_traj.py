"""Reader of ASE binary trajectories (``.traj``) through :class:`ase.io.Trajectory`.

The frames are read one by one (the format is a random-access binary file, so this is
cheap) and handed to the frame store in blocks, so only the kept atoms stay in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.frames import FrameSink, map_types, parse_type_map
from iondiff_core.io.limits import check_atom_frames, check_regular

_BLOCK_BYTES = 8 << 20  # all-atom positions handed to the sink at once


def _open(path, src):
    check_regular(path)
    try:
        from ase.io import Trajectory as AseTrajectory

        return AseTrajectory(str(path), "r")
    except Exception as e:  # ulm raises various errors on a non-trajectory file
        raise InputError(f"{src}: not a readable ASE trajectory ({type(e).__name__}: {e})") from None


def sniff_ase_traj(path: str | Path, type_map=None) -> dict:
    src = str(path)
    tr = _open(path, src)
    try:
        if len(tr) == 0:
            raise InputError(f"{src}: no frame")
        sp = tr[0].get_chemical_symbols()
    finally:
        tr.close()
    tmap = parse_type_map(type_map)
    return {"species": map_types(sp, tmap, src, "species") if tmap else sp, "n_atoms": len(sp)}


def read_ase_traj(path: str | Path, type_map=None, *, keep: str = "all", mobile: str | None = None, dtype=np.float64):
    """Read an ASE ``.traj`` file as a :class:`Trajectory`.

    ``timestep_fs`` is taken from a ``timestep``/``dt`` entry of the first frame's
    ``info`` (assumed fs) when there is one, else None. A frame that cannot be
    decoded at the end of the file (an interrupted write) is dropped with a warning.
    """
    src = str(path)
    tmap = parse_type_map(type_map)
    warnings: list[str] = []
    tr = _open(path, src)
    try:
        T = len(tr)
        if T == 0:
            raise InputError(f"{src}: no frame")
        first = tr[0]
        numbers0 = first.numbers.copy()
        species = first.get_chemical_symbols()
        check_atom_frames(src, len(species), T)
        if tmap is not None:
            species = map_types(species, tmap, src, "species")
        sink = FrameSink(species, src, keep, mobile, dtype, capacity=T)
        pos, cells = [], []
        # Blocks small next to the output (T x kept atoms), so the peak stays below 2x it.
        out_bytes = T * sink.positions.shape[1] * 3 * sink.dtype.itemsize
        block = max(1, min(_BLOCK_BYTES, max(256 << 10, out_bytes // 8)) // (24 * len(numbers0)))
        backend = getattr(tr, "backend", None)
        cell = np.array(first.cell.array, dtype=float)
        pbc = first.pbc.copy()
        for t in range(T):
            try:
                # The raw frame (positions, and cell/numbers/pbc only where they change):
                # a third of the time of building an Atoms object per frame.
                r = backend[t] if backend is not None else None
                if r is None or "positions" not in r:
                    r = first if t == 0 else tr[t]
                    positions, numbers, cell, pbc = r.positions, r.numbers, np.array(r.cell.array, float), r.pbc
                else:
                    positions = r.positions
                    numbers = r.numbers if "numbers" in r else numbers0
                    cell = np.asarray(r.cell, dtype=float) if "cell" in r else cell
                    pbc = np.asarray(r.pbc) if "pbc" in r else pbc
            except Exception as e:  # a half-written last frame
                if t == T - 1:
                    warnings.append(f"dropped incomplete last frame {t + 1} ({type(e).__name__})")
                    break
                raise InputError(f"{src}: cannot read frame {t + 1} ({type(e).__name__}: {e})") from None
            if len(numbers) != len(numbers0) or not np.array_equal(numbers, numbers0):
                raise InputError(
                    f"{src}: frame {t + 1} has {len(numbers)} atoms, frame 1 had "
                    f"{len(numbers0)} (the same atoms must be in every frame)"
                )
            if not np.all(pbc) or abs(np.linalg.det(cell)) < 1e-9:
                raise InputError(f"{src}: frame {t + 1} has no periodic 3D cell (pbc={np.asarray(pbc).tolist()})")
            pos.append(positions)
            cells.append(cell)
            if len(pos) >= block:
                _flush(sink, pos, cells)
        _flush(sink, pos, cells)
        info = first.info
    finally:
        tr.close()
    timestep = None
    for key in ("timestep", "dt", "time_step", "dt_fs"):
        if key in info:
            try:
                timestep = float(info[key])
                warnings.append(f"timestep {timestep:g} read from the frames' {key!r} (assumed fs)")
                break
            except (TypeError, ValueError):
                pass
    return sink.finish(warnings, timestep_fs=timestep)


def _flush(sink: FrameSink, pos: list, cells: list) -> None:
    if pos:
        c = np.stack(cells)
        sink.add(np.einsum("tnj,tjk->tnk", np.stack(pos), np.linalg.inv(c)), c)
        pos.clear()
        cells.clear()
