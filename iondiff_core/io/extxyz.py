"""Streaming reader of extended XYZ (extxyz) trajectories, without ASE frame by frame.

Each frame is ``N`` lines of atoms after a count line and a comment line holding
``Lattice="..."`` and ``Properties=...``. The file is read in chunks of whole frames:
the cells of a chunk come from one regular-expression pass over its comment lines,
its atom lines go through pandas' C tokenizer in one call (positions columns only),
and the species are read once, from the first frame.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.frames import (
    CHUNK_BYTES,
    FrameSink,
    auto_chunk,
    choose_kept,
    Prefixed,
    TextChunk,
    diagnose_lines,
    estimate_frames,
    iter_text_frames,
    map_types,
    parse_columns,
    parse_type_map,
    read_head,
)
from iondiff_core.io.xdatcar import MAX_ATOMS, open_decompressed
from iondiff_core.trajectory import cell_problem

_LATTICE = re.compile(rb'Lattice\s*=\s*"([^"]*)"')
_PROPS = re.compile(rb"Properties\s*=\s*(\S+)")
_PBC = re.compile(rb'pbc\s*=\s*"([^"]*)"')
_TIME = re.compile(rb'(?:^|\s)time\s*=\s*"?([-+0-9.eE]+)')
_DT_KEYS = ("dt", "timestep", "time_step", "dt_fs")


def _columns(props: str, src: str) -> tuple[int, int, int]:
    """(number of columns, species column, first position column) from Properties=."""
    parts = props.split(":")
    if len(parts) % 3:
        raise InputError(f"{src} line 2: malformed Properties={props!r}")
    col, species_col, pos_col = 0, None, None
    for name, kind, width in zip(parts[0::3], parts[1::3], parts[2::3]):
        try:
            w = int(width)
        except ValueError:
            raise InputError(f"{src} line 2: malformed Properties={props!r}") from None
        if name == "species" and kind == "S":
            species_col = col
        elif name in ("pos", "positions") and kind == "R" and w == 3:
            pos_col = col
        col += w
    if species_col is None or pos_col is None:
        raise InputError(f"{src} line 2: Properties={props!r} needs a species column and a pos:R:3 column")
    return col, species_col, pos_col


def _header(head: bytes, src: str):
    lines = head.split(b"\n", 2)
    if len(lines) < 2:
        raise InputError(f"{src}: not an extxyz file (fewer than 2 lines)")
    try:
        n = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise InputError(f"{src} line 1: expected the number of atoms, got {lines[0][:60].decode('latin-1')!r}") from None
    if n <= 0 or n > MAX_ATOMS:
        raise InputError(f"{src} line 1: {n} atoms (a corrupt header: expected 1 to {MAX_ATOMS:,})")
    comment = lines[1].rstrip(b"\r")
    m = _PROPS.search(comment)
    props = m.group(1).decode("latin-1") if m else "species:S:1:pos:R:3"
    return n, comment, props


def sniff_extxyz(path: str | Path, type_map=None) -> dict:
    """Species of every atom from the first frame only."""
    src = str(path)
    with open_decompressed(path) as stream:
        head = read_head(stream, 2)
        if not head.strip():
            raise InputError(f"{src}: the file is empty")
        n, _, props = _header(head, src)
        head += read_head(stream, n + 3)
    ncol, scol, _ = _columns(props, src)
    rows = head.split(b"\n", n + 2)[2 : n + 2]
    if len(rows) < n:
        raise InputError(f"{src}: the first frame ends after {len(rows)} of {n} atom lines")
    return {"species": _species(rows, ncol, scol, parse_type_map(type_map), src), "n_atoms": n}


def _species(rows: list[bytes], ncol: int, scol: int, tmap, src: str) -> list[str]:
    out = []
    for i, r in enumerate(rows):
        toks = r.split()
        if len(toks) != ncol:
            raise InputError(f"{src} line {i + 3}: expected {ncol} columns, got {len(toks)}")
        out.append(toks[scol].decode("latin-1"))
    if tmap is not None:
        return map_types(out, tmap, src, "species label")
    return out


def read_extxyz(
    path: str | Path,
    type_map=None,
    *,
    keep: str = "all",
    mobile: str | None = None,
    dtype=np.float64,
    chunk_bytes: int = CHUNK_BYTES,
):
    """Read an extxyz trajectory (plain, .gz, .xz or .bz2) as a :class:`Trajectory`.

    Parameters
    ----------
    path : str or Path
    type_map : str, dict or list, optional
        Rename species labels (e.g. numeric types ``'1=Li,2=P'``).
    keep, mobile, dtype
        As in :func:`iondiff_core.io.read_trajectory`.

    Returns
    -------
    Trajectory
        Cells from ``Lattice=`` per frame (NPT); ``timestep_fs`` from a ``dt``/``timestep``
        key of the first frame or evenly spaced ``time`` keys (assumed fs), else None.

    Raises
    ------
    InputError
        A frame without a lattice, a different atom count or Properties (naming the
        frame), a malformed atom line (naming the line), no complete frame. A file
        that ends mid-frame keeps the whole frames with a warning.
    """
    src = str(path)
    tmap = parse_type_map(type_map)
    warnings: list[str] = []
    with open_decompressed(path) as raw:
        head = read_head(raw, 2)
        if not head.strip():
            raise InputError(f"{src}: the file is empty")
        N, comment0, props = _header(head, src)
        L = N + 2
        head += read_head(raw, L + 1 - head.count(b"\n")) if head.count(b"\n") <= L else b""
        ncol, scol, pcol = _columns(props, src)
        rows = head.split(b"\n", L)[2:L]
        species = _species(rows, ncol, scol, tmap, src) if len(rows) == N and head.count(b"\n") >= L else None
        count_line = str(N).encode()
        props_b = props.encode()
        sink = None
        times: list[np.ndarray] = []
        bytes_per_frame = len(head) / max(head.count(b"\n"), 1) * L

        def check(chunk: TextChunk) -> None:
            counts = chunk.join(0, 1, L).split()
            if len(counts) == chunk.n_frames and all(c == count_line for c in counts):
                return
            for k in range(chunk.n_frames):
                if chunk.line(k * L).strip() != count_line:
                    _frame_error(src, chunk.line(k * L), chunk.frame0 + k, chunk.line0 + k * L, N)

        if species is not None:
            sel = choose_kept(species, keep, mobile, src)
            n_keep = N if sel is None else sel.size
            chunk_bytes = auto_chunk(path, raw, bytes_per_frame, n_keep, np.dtype(dtype).itemsize, chunk_bytes)
        stream = Prefixed(head, raw)
        for chunk in iter_text_frames(stream, L, check, chunk_bytes):
            if isinstance(chunk, tuple):
                tail, fno, lno = chunk
                break
            n = chunk.n_frames
            if sink is None:
                sink = FrameSink(species, src, keep, mobile, dtype, estimate_frames(path, raw, len(head), (int(chunk.ends[-1]) + 1) / n))
            comments = chunk.join(1, 1, L)
            lat = _LATTICE.findall(comments)
            if len(lat) != n:
                k = next(k for k in range(n) if not _LATTICE.search(chunk.line(k * L + 1)))
                raise InputError(
                    f"{src} line {chunk.line0 + k * L + 1}: frame {chunk.frame0 + k} has no periodic 3D cell "
                    "(no Lattice=\"...\"; hops are defined in a periodic cell)"
                )
            try:
                cells = np.array(b" ".join(lat).split(), dtype=np.float64).reshape(n, 3, 3)
            except ValueError:
                k = next(k for k, x in enumerate(lat) if len(x.split()) != 9)
                raise InputError(
                    f"{src} line {chunk.line0 + k * L + 1}: frame {chunk.frame0 + k}: Lattice must hold 9 numbers"
                ) from None
            with np.errstate(invalid="ignore"):  # NaN cells are named below
                det = np.linalg.det(cells)
            if np.any(np.abs(det) < 1e-9):
                k = int(np.flatnonzero(np.abs(det) < 1e-9)[0])
                raise InputError(f"{src} line {chunk.line0 + k * L + 1}: frame {chunk.frame0 + k} has a zero-volume cell")
            bad = cell_problem(cells)
            if bad:
                k = bad[0]
                raise InputError(f"{src} line {chunk.line0 + k * L + 1}: frame {chunk.frame0 + k}: {bad[1]}")
            if any(set(x.upper().split()) - {b"T", b"TRUE", b"1"} for x in set(_PBC.findall(comments))):
                for k in range(n):
                    m = _PBC.search(chunk.line(k * L + 1))
                    if m and set(m.group(1).upper().split()) - {b"T", b"TRUE", b"1"}:
                        raise InputError(
                            f"{src} line {chunk.line0 + k * L + 1}: frame {chunk.frame0 + k} has no periodic 3D cell "
                            f"(pbc=\"{m.group(1).decode('latin-1')}\")"
                        )
            pr = _PROPS.findall(comments)
            if any(p != props_b for p in pr) or (len(pr) not in (0, n)):
                k = next(k for k in range(n) if (_PROPS.search(chunk.line(k * L + 1)) or [0, b""])[1] != props_b)
                raise InputError(
                    f"{src} line {chunk.line0 + k * L + 1}: frame {chunk.frame0 + k} changes Properties= "
                    f"(frame 1: {props})"
                )
            tm = _TIME.findall(comments)
            if times is not None and len(tm) == n:
                times.append(np.array(tm, dtype=np.float64))
            else:
                times = None
            usecols = [pcol, pcol + 1, pcol + 2]
            cart = parse_columns(chunk.join(2, N, L), ncol, usecols, n * N)
            if cart is None:
                diagnose_lines(src, chunk, 2, N, L, ncol, usecols, "Properties=" + props)
            frac = np.einsum("tnj,tjk->tnk", cart.reshape(n, N, 3), np.linalg.inv(cells))
            sink.add(frac, cells)
        truncated = getattr(raw, "truncated", False)
    if tail.strip():
        first = tail.split(b"\n", 1)[0]
        if first.strip() != count_line:
            _frame_error(src, first, fno, lno, N)
        atoms = max(0, tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1) - 2)
        warnings.append(f"dropped incomplete last frame {fno} ({atoms} of {N} atoms): the file ends mid-frame")
    if truncated:
        warnings.append(f"the compressed stream ends early (truncated file); read the {fno - 1} complete frames")
    if sink is None:
        raise InputError(f"{src}: no complete frame ({warnings[-1] if warnings else 'no atom lines'})")
    timestep = _timestep(comment0, np.concatenate(times) if times else None, warnings)
    return sink.finish(warnings, timestep_fs=timestep)


def _frame_error(src: str, line: bytes, fno: int, lno: int, n: int) -> None:
    text = line.strip().decode("latin-1")
    toks = text.split()
    if len(toks) == 1 and toks[0].isdigit():
        raise InputError(f"{src} line {lno}: frame {fno} has {toks[0]} atoms, frame 1 had {n} (the same atoms must be in every frame)")
    raise InputError(
        f"{src} line {lno}: expected the atom count {n} to start frame {fno}, got {text[:60]!r} "
        f"(frame {fno - 1} has more or fewer than {n} atom lines?)"
    )


def _timestep(comment0: bytes, times: np.ndarray | None, warnings: list[str]) -> float | None:
    """Frame spacing in fs from the first frame's dt-like key, or evenly spaced times."""
    for key in _DT_KEYS:
        m = re.search(rb"(?:^|\s)" + key.encode() + rb'\s*=\s*"?([-+0-9.eE]+)', comment0)
        if m:
            try:
                dt = float(m.group(1))
            except ValueError:
                continue
            if dt > 0:
                warnings.append(f"timestep {dt:g} read from the frames' {key!r} (assumed fs)")
                return dt
    if times is not None and times.size > 1:
        d = np.diff(times)
        if d[0] > 0 and np.allclose(d, d[0], rtol=1e-6):
            warnings.append(f"timestep {d[0]:g} from the frames' 'time' (assumed fs)")
            return float(d[0])
    return None


def write_extxyz(traj, path: str | Path) -> Path:
    """Write a trajectory as extxyz (wrapped Cartesian positions, Å; the cell of every
    frame in ``Lattice``; ``time`` in fs when the timestep is known), as MLIP MD codes do.

    Coordinates are written with 8 decimals, the cell with 10: a read-back agrees to
    about 1e-8 Å. One format call per frame, so 10^7 atom-frames take about ten seconds.
    """
    path = Path(path)
    species = list(traj.species)
    n = traj.n_atoms
    rows = "".join(f"{s} %.8f %.8f %.8f\n" for s in species)
    dt = traj.timestep_fs
    with open(path, "w") as f:
        parts = []
        for t in range(traj.n_frames):
            frac = np.asarray(traj.positions_frac[t], dtype=float)
            cart = (frac - np.floor(frac)) @ traj.cells[t]
            lat = " ".join(f"{x:.10f}" for x in traj.cells[t].ravel())
            info = f" time={t * dt:.6f}" if dt else ""
            parts.append(f'{n}\nLattice="{lat}" Properties=species:S:1:pos:R:3{info} pbc="T T T"\n')
            parts.append(rows % tuple(cart.ravel()))
            if len(parts) > 128:
                f.write("".join(parts))
                parts = []
        f.write("".join(parts))
    return path
