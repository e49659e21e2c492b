"""Reader of H5MD files (HDF5, https://www.nongnu.org/h5md/) through h5py.

Reads ``particles/<group>/position/value`` (T, N, 3) in blocks of frames, the box from
``particles/<group>/box/edges`` (fixed or time-dependent ``value``; a vector of edge
lengths or a (3, 3) matrix), species from ``particles/<group>/species`` (element names,
or integer types mapped with a type map, else read as atomic numbers) and, when
present, ``image`` flags, applied exactly. Lengths in nm are converted to Å; the time
between frames comes from ``position/time`` (in the unit its attribute names, ps if
none) or ``position/step`` with a ``timestep`` attribute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.limits import check_atom_frames, check_regular
from iondiff_core.trajectory import cell_problem
from iondiff_core.io.frames import FrameSink, map_types, parse_type_map

_BLOCK_BYTES = 32 << 20  # raw positions read per block
_LENGTH = {"nm": 10.0, "angstrom": 1.0, "a": 1.0, "å": 1.0, "ang": 1.0, "pm": 0.01, "bohr": 0.529177210903}
_TIME_FS = {"fs": 1.0, "ps": 1000.0, "ns": 1e6, "as": 1e-3}


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise InputError("reading H5MD needs the 'h5py' package (pip install h5py)") from None
    return h5py


def _unit(obj, table: dict, default: str, what: str, src: str, warnings: list[str]) -> float:
    unit = obj.attrs.get("unit")
    if unit is None:
        return table[default]
    if isinstance(unit, bytes):
        unit = unit.decode()
    u = str(np.atleast_1d(unit)[0]).strip().lower()
    if u not in table:
        raise InputError(f"{src}: unknown {what} unit {u!r} (expected one of {', '.join(table)})")
    return table[u]


def _group(f, src: str, group: str | None):
    if "particles" not in f:
        raise InputError(f"{src}: no /particles group (not an H5MD file)")
    parts = f["particles"]
    names = [g for g in parts if "position" in parts[g]]
    if group is None:
        if len(names) != 1:
            raise InputError(f"{src}: particle groups with positions: {', '.join(names) or 'none'}; choose one")
        group = names[0]
    if group not in names:
        raise InputError(f"{src}: no particles/{group}/position")
    return parts[group], group


def _species_of(g, n: int, tmap, src: str) -> list[str]:
    if "species" not in g:
        raise InputError(f"{src}: particles/{g.name.split('/')[-1]} has no species; cannot tell the atoms apart")
    ds = g["species"]
    if not hasattr(ds, "shape"):  # time-dependent element: take frame 0
        ds = ds["value"]
        vals = ds[0] if ds.ndim == 2 else ds[()]
    else:
        vals = ds[()]
    vals = np.asarray(vals).ravel()
    if vals.size != n:
        raise InputError(f"{src}: {vals.size} species for {n} atoms")
    if vals.dtype.kind in "SOU":
        labels = [v.decode() if isinstance(v, bytes) else str(v) for v in vals]
        return map_types(labels, tmap, src, "species label") if tmap else labels
    types = [str(int(v)) for v in vals]
    if tmap is not None:
        return map_types(types, tmap, src)
    from ase.data import chemical_symbols

    if not all(0 < int(t) < len(chemical_symbols) for t in types):
        raise InputError(f"{src}: species are type numbers; give a type map (1=Li,2=P,...)")
    return [chemical_symbols[int(t)] for t in types]


def sniff_h5md(path: str | Path, type_map=None, group: str | None = None) -> dict:
    h5py = _h5py()
    src = str(path)
    check_regular(path)
    try:
        with h5py.File(path, "r") as f:
            g, _ = _group(f, src, group)
            n = g["position/value"].shape[1]
            return {"species": _species_of(g, n, parse_type_map(type_map), src), "n_atoms": n}
    except OSError as e:
        raise InputError(f"{src}: not a readable HDF5 file ({e})") from None


def _boxes(g, T: int, scale: float, src: str) -> tuple[np.ndarray, bool]:
    """Cells (T or 1, 3, 3) in Å and whether they change per frame."""
    if "box" not in g or "edges" not in g["box"]:
        raise InputError(f"{src}: no particles/.../box/edges (hops are defined in a periodic box)")
    box = g["box"]
    bnd = box.attrs.get("boundary")
    if bnd is not None and any((b.decode() if isinstance(b, bytes) else str(b)) != "periodic" for b in np.ravel(bnd)):
        raise InputError(f"{src}: the box is not periodic in every direction (boundary={list(np.ravel(bnd))})")
    e = box["edges"]
    timed = not hasattr(e, "shape")
    data = np.asarray(e["value"][()] if timed else e[()], dtype=np.float64) * scale
    if timed:
        if data.shape[0] != T:
            raise InputError(f"{src}: box/edges/value has {data.shape[0]} frames, positions {T}")
        cells = data if data.ndim == 3 else np.einsum("tj,jk->tjk", data, np.eye(3))
    else:
        cells = (data if data.ndim == 2 else np.diag(data))[None]
    if cells.shape[1:] != (3, 3):
        raise InputError(f"{src}: box/edges has shape {data.shape}; expected 3 lengths or a 3x3 matrix")
    bad = cell_problem(cells)
    if bad:
        raise InputError(f"{src}: box/edges of frame {bad[0] + 1}: {bad[1]}")
    return cells, timed


def read_h5md(
    path: str | Path,
    type_map=None,
    *,
    group: str | None = None,
    keep: str = "all",
    mobile: str | None = None,
    dtype=np.float64,
):
    """Read an H5MD trajectory as a :class:`Trajectory` (see the module notes)."""
    h5py = _h5py()
    src = str(path)
    warnings: list[str] = []
    tmap = parse_type_map(type_map)
    check_regular(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{src}: not a readable HDF5 file ({e})") from None
    with f:
        g, name = _group(f, src, group)
        pos_el = g["position"]
        ds = pos_el["value"]
        if ds.ndim != 3 or ds.shape[2] != 3:
            raise InputError(f"{src}: particles/{name}/position/value has shape {ds.shape}; expected (frames, atoms, 3)")
        T, N = ds.shape[0], ds.shape[1]
        if T == 0:
            raise InputError(f"{src}: no frame")
        check_atom_frames(src, N, T)
        scale = _unit(ds, _LENGTH, "angstrom", "length", src, warnings)
        species = _species_of(g, N, tmap, src)
        cells, timed = _boxes(g, T, scale, src)
        img = g["image"]["value"] if "image" in g and "value" in g["image"] else None
        sink = FrameSink(species, src, keep, mobile, dtype, capacity=T, unwrapped=img is not None)
        # Blocks small next to the output (T x kept atoms), so the peak stays below 2x it.
        out_bytes = T * sink.positions.shape[1] * 3 * sink.dtype.itemsize
        block_bytes = min(_BLOCK_BYTES, max(1 << 20, out_bytes // 8))
        block = max(1, block_bytes // max(N * 3 * 8, 1))
        inv_fixed = None if timed else np.linalg.inv(cells[0])
        for a in range(0, T, block):
            b = min(T, a + block)
            try:
                cart = np.asarray(ds[a:b], dtype=np.float64) * scale
                shift = np.asarray(img[a:b], dtype=np.float64) if img is not None else None
            except OSError as e:
                warnings.append(f"frames {a + 1}-{T} could not be read ({e}); kept the {a} frames before them")
                break
            c = cells[a:b] if timed else cells[0]
            frac = cart @ inv_fixed if not timed else np.einsum("tnj,tjk->tnk", cart, np.linalg.inv(c))
            if shift is not None:
                frac += shift
            sink.add(frac, c)
        timestep = _timestep(pos_el, warnings, src)
    return sink.finish(warnings, timestep_fs=timestep)


def _timestep(pos_el, warnings, src) -> float | None:
    if "time" in pos_el:
        t = pos_el["time"]
        to_fs = _unit(t, _TIME_FS, "ps", "time", src, warnings)
        if t.shape == ():  # a fixed step between frames
            dt = float(t[()]) * (pos_el["step"][()] if "step" in pos_el and pos_el["step"].shape == () else 1.0)
            return dt * to_fs if dt > 0 else None
        times = np.asarray(t[:2048], dtype=np.float64) * to_fs
        d = np.diff(times)
        if d.size and d[0] > 0 and np.allclose(d, d[0], rtol=1e-6):
            if t.attrs.get("unit") is None:
                warnings.append("H5MD position/time has no unit attribute; read as ps")
            return float(d[0])
        if d.size:
            warnings.append("H5MD frames are not evenly spaced in time; give timestep_fs")
    return None
