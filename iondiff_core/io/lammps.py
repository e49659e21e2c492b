"""Streaming reader of LAMMPS text dumps (``dump ... custom``/``atom``).

Supported: orthogonal and triclinic boxes (``xy xz yz`` tilt), a box per frame (NPT),
positions as wrapped ``x y z`` or scaled ``xs ys zs`` (with ``ix iy iz`` image flags
applied exactly when present), unwrapped ``xu yu zu`` or ``xsu ysu zsu``; atoms in any
order (sorted by ``id``); species from an ``element`` column or numeric types mapped
with a type map (``1=Li,2=P``). The file is read in chunks of whole frames: the atom
lines of a chunk go through pandas' C tokenizer in one call; Python touches only the
nine header lines of each frame.
"""

from __future__ import annotations

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

_P = 9  # header lines per frame
_POSITION_SETS = (  # (columns, scaled, unwrapped), most direct first
    (("xu", "yu", "zu"), False, True),
    (("xsu", "ysu", "zsu"), True, True),
    (("x", "y", "z"), False, False),
    (("xs", "ys", "zs"), True, False),
)


class _Layout:
    """What the first frame's header says about every frame."""

    n_atoms: int
    box_line: bytes
    atoms_line: bytes
    triclinic: bool
    cols: list[str]
    id_col: int | None
    type_col: int | None
    element_col: int | None
    pos_cols: list[int]
    image_cols: list[int] | None
    scaled: bool
    unwrapped: bool


def _lines(buf: bytes, n: int) -> list[bytes]:
    return [x.rstrip(b"\r") for x in buf.split(b"\n", n)[:n]]


def _layout(head: bytes, src: str) -> _Layout:
    lines = _lines(head, _P)
    if len(lines) < _P:
        raise InputError(f"{src}: not a LAMMPS dump (fewer than {_P} lines)")
    expect = {0: b"ITEM: TIMESTEP", 2: b"ITEM: NUMBER OF ATOMS", 4: b"ITEM: BOX BOUNDS", 8: b"ITEM: ATOMS"}
    for i, word in expect.items():
        if not lines[i].strip().startswith(word):
            raise InputError(f"{src} line {i + 1}: expected {word.decode()!r}, got {lines[i][:60].decode('latin-1')!r}")
    lay = _Layout()
    try:
        lay.n_atoms = int(lines[3])
    except ValueError:
        raise InputError(f"{src} line 4: the number of atoms must be a whole number, got {lines[3][:40]!r}") from None
    if lay.n_atoms <= 0 or lay.n_atoms > MAX_ATOMS:
        raise InputError(f"{src} line 4: {lay.n_atoms} atoms (a corrupt header: expected 1 to {MAX_ATOMS:,})")
    lay.box_line = lines[4].strip()
    lay.atoms_line = lines[8].strip()
    box_words = lay.box_line.decode("latin-1").split()[3:]
    lay.triclinic = box_words[:3] == ["xy", "xz", "yz"]
    bounds = box_words[3:] if lay.triclinic else box_words
    if bounds and any(b != "pp" for b in bounds):
        raise InputError(f"{src} line 5: the box must be periodic in x, y and z (pp pp pp), got {' '.join(bounds)}")
    cols = lay.atoms_line.decode("latin-1").split()[2:]
    lay.cols = cols
    lay.id_col = cols.index("id") if "id" in cols else None
    lay.type_col = cols.index("type") if "type" in cols else None
    lay.element_col = cols.index("element") if "element" in cols else None
    for names, scaled, unwrapped in _POSITION_SETS:
        if all(n in cols for n in names):
            lay.pos_cols = [cols.index(n) for n in names]
            lay.scaled, lay.unwrapped = scaled, unwrapped
            break
    else:
        raise InputError(
            f"{src} line 9: no position columns (x y z, xs ys zs, xu yu zu or xsu ysu zsu) in {' '.join(cols)!r}"
        )
    img = ("ix", "iy", "iz")
    lay.image_cols = [cols.index(n) for n in img] if not lay.unwrapped and all(n in cols for n in img) else None
    if lay.image_cols is not None:
        lay.unwrapped = True
    if lay.type_col is None and lay.element_col is None:
        raise InputError(f"{src} line 9: the dump has neither a 'type' nor an 'element' column")
    return lay


def _cells(box: np.ndarray, triclinic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cells (n, 3, 3) and origins (n, 3) in Å from the BOX BOUNDS numbers (n, 3, 2|3)."""
    lo, hi = box[:, :, 0].copy(), box[:, :, 1].copy()
    n = box.shape[0]
    tilt = box[:, :, 2] if triclinic else np.zeros((n, 3))
    xy, xz, yz = tilt[:, 0], tilt[:, 1], tilt[:, 2]
    if triclinic:
        # The bounds enclose the tilted box; recover the box itself (LAMMPS Howto triclinic).
        z = np.zeros(n)
        lo[:, 0] -= np.minimum.reduce([z, xy, xz, xy + xz])
        hi[:, 0] -= np.maximum.reduce([z, xy, xz, xy + xz])
        lo[:, 1] -= np.minimum(z, yz)
        hi[:, 1] -= np.maximum(z, yz)
    cells = np.zeros((n, 3, 3))
    cells[:, 0, 0] = hi[:, 0] - lo[:, 0]
    cells[:, 1, 0], cells[:, 1, 1] = xy, hi[:, 1] - lo[:, 1]
    cells[:, 2, 0], cells[:, 2, 1], cells[:, 2, 2] = xz, yz, hi[:, 2] - lo[:, 2]
    return cells, lo


def sniff_lammps(path: str | Path, type_map=None) -> dict:
    """Species of every atom (in id order) and the layout, from the first frame only."""
    src = str(path)
    tmap = parse_type_map(type_map)
    with open_decompressed(path) as stream:
        head = read_head(stream, _P)
        if not head.strip():
            raise InputError(f"{src}: the file is empty")
        lay = _layout(head, src)
        head += read_head(stream, lay.n_atoms + 1) if head.count(b"\n") < _P + lay.n_atoms else b""
    lines = _lines(head, _P + lay.n_atoms)[_P:]
    if len(lines) < lay.n_atoms:
        raise InputError(f"{src}: the first frame ends after {len(lines)} of {lay.n_atoms} atom lines")
    species, _ = _species(lines, lay, tmap, src)
    return {"species": species, "n_atoms": lay.n_atoms}


def _species(lines: list[bytes], lay: _Layout, tmap, src: str) -> tuple[list[str], list[str]]:
    """Species of the first frame's atoms in id order, and any warning."""
    rows = [ln.split() for ln in lines]
    ncol = len(lay.cols)
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise InputError(f"{src} line {_P + 1 + i}: expected {ncol} columns ({' '.join(lay.cols)}), got {len(r)}")
    order = np.argsort([int(r[lay.id_col]) for r in rows], kind="stable") if lay.id_col is not None else range(len(rows))
    warns = []
    if lay.element_col is not None and tmap is None:
        return [rows[i][lay.element_col].decode() for i in order], warns
    types = [rows[i][lay.type_col].decode() for i in order]
    if tmap is None:
        from ase.data import chemical_symbols

        bad = [t for t in set(types) if not t.isdigit() or not 0 < int(t) < len(chemical_symbols)]
        if bad:
            raise InputError(f"{src}: atom types {', '.join(sorted(bad))} need a type map (type_map='1=Li,2=P,...')")
        warns.append(
            "LAMMPS dump without an element column: atom type t is read as the element with atomic "
            "number t; give a type map (--type-map 1=Li,2=P,...) to name the types"
        )
        return [chemical_symbols[int(t)] for t in types], warns
    return map_types(types, tmap, src), warns


def read_lammps_dump(
    path: str | Path,
    type_map=None,
    *,
    keep: str = "all",
    mobile: str | None = None,
    dtype=np.float64,
    chunk_bytes: int = CHUNK_BYTES,
):
    """Read a LAMMPS text dump (plain, .gz, .xz or .bz2) as a :class:`Trajectory`.

    Parameters
    ----------
    path : str or Path
    type_map : str, dict or list, optional
        Species of the numeric atom types: ``'1=Li,2=P'``, ``{1: 'Li'}`` or
        ``['Li', 'P']`` (types 1, 2, ...). Overrides an ``element`` column.
    keep : {'all', 'mobile'}
        Hold every atom, or only the ``mobile`` species (the framework's drift is kept).
    mobile : str, optional
        The mobile species for ``keep='mobile'`` (default: first of Li, Na, ...).
    dtype : numpy dtype
        Storage type of the positions (float32 halves the memory).

    Returns
    -------
    Trajectory
        Atoms in ``id`` order; ``unwrapped`` when the positions are unwrapped or image
        flags are present; ``timestep_fs`` None (the dump stores MD steps, not times).

    Raises
    ------
    InputError
        Malformed header or atom line (with the line), an atom count, atom ids or
        types that change between frames (with the frame), no complete frame.
    """
    src = str(path)
    tmap = parse_type_map(type_map)
    warnings: list[str] = []
    with open_decompressed(path) as raw:
        head = read_head(raw, _P)
        if not head.strip():
            raise InputError(f"{src}: the file is empty")
        lay = _layout(head, src)
        N = lay.n_atoms
        L = _P + N
        head += read_head(raw, L + 1 - head.count(b"\n")) if head.count(b"\n") <= L else b""
        first = _lines(head, L + 1)
        if len(first) >= L:
            species, w = _species(first[_P:L], lay, tmap, src)
            warnings += w
        else:
            species = None  # no complete frame: reported below
        bytes_per_frame = max(len(b"\n".join(first[:L])), 1)
        sink = None
        ncol = len(lay.cols)
        numeric = [c for c in (lay.id_col, lay.type_col) if c is not None] + lay.pos_cols + (lay.image_cols or [])
        ids0 = types0 = None
        steps = []

        def check(chunk: TextChunk) -> None:
            for k in range(chunk.n_frames):
                base = k * L
                ok = (
                    chunk.line(base).strip() == b"ITEM: TIMESTEP"
                    and chunk.line(base + 3).strip() == str(N).encode()
                    and chunk.line(base + 4).strip() == lay.box_line
                    and chunk.line(base + 8).strip() == lay.atoms_line
                )
                if not ok:
                    _frame_error(src, chunk.buf[chunk.starts[base] :], chunk.frame0 + k, chunk.line0 + base, lay)

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
                sink = FrameSink(
                    species, src, keep, mobile, dtype,
                    estimate_frames(path, raw, len(head), (int(chunk.ends[-1]) + 1) / n), lay.unwrapped,
                )
            steps.append(np.array(chunk.join(1, 1, L).split(), dtype=np.int64))
            nb = 3 if lay.triclinic else 2
            try:
                box = np.array(chunk.join(5, 3, L).split(), dtype=np.float64).reshape(n, 3, nb)
            except ValueError:
                box = _bad_box(src, chunk, L, nb)
            cells, origin = _cells(box, lay.triclinic)
            flat = ~(np.einsum("nii->ni", cells) > 0).all(axis=1)  # hi <= lo (NaN too)
            if flat.any():
                k = int(np.flatnonzero(flat)[0])
                raise InputError(
                    f"{src} line {chunk.line0 + k * L + 5}: frame {chunk.frame0 + k} has a zero-volume box (hi <= lo, or not a number)"
                )
            bad = cell_problem(cells)
            if bad:
                k = bad[0]
                raise InputError(f"{src} line {chunk.line0 + k * L + 5}: frame {chunk.frame0 + k}: {bad[1]}")
            arr = parse_columns(chunk.join(_P, N, L), ncol, numeric, n * N)
            if arr is None:
                diagnose_lines(src, chunk, _P, N, L, ncol, numeric, "atom columns " + " ".join(lay.cols))
            arr = arr.reshape(n, N, -1)
            j = 0
            if lay.id_col is not None:
                ids = arr[:, :, 0].astype(np.int64)
                j += 1
                if ids0 is None:
                    ids0 = np.sort(ids[0])
                    if np.any(np.diff(ids0) == 0):
                        raise InputError(f"{src}: frame 1 repeats atom ids")
                if not np.array_equal(ids, np.broadcast_to(ids0, ids.shape)):
                    order = np.argsort(ids, axis=1, kind="stable")
                    ids = np.take_along_axis(ids, order, axis=1)
                    bad = np.flatnonzero(np.any(ids != ids0, axis=1))
                    if bad.size:
                        raise InputError(
                            f"{src} line {chunk.line0 + bad[0] * L + _P}: frame {chunk.frame0 + bad[0]} holds other "
                            f"atom ids than frame 1 (the same {N} atoms must be in every frame)"
                        )
                    arr = np.take_along_axis(arr, order[:, :, None], axis=1)
            if lay.type_col is not None:
                types = arr[:, :, j]
                j += 1
                if types0 is None:
                    types0 = types[0].copy()
                bad = np.flatnonzero(np.any(types != types0, axis=1))
                if bad.size:
                    raise InputError(
                        f"{src} line {chunk.line0 + bad[0] * L + _P}: atom types change in frame "
                        f"{chunk.frame0 + bad[0]} (the atoms must keep their type)"
                    )
            pos = arr[:, :, j : j + 3]
            if not lay.scaled:
                pos = np.einsum("tnj,tjk->tnk", pos - origin[:, None, :], np.linalg.inv(cells))
            if lay.image_cols is not None:
                pos = pos + arr[:, :, j + 3 : j + 6]
            sink.add(pos, cells)
        else:  # pragma: no cover - iter_text_frames always ends with the tail
            tail, fno, lno = b"", 1, 1
        truncated = getattr(raw, "truncated", False)
    if tail.strip():
        _tail(src, tail, fno, lno, lay, warnings)
    if truncated:
        warnings.append(f"the compressed stream ends early (truncated file); read the {fno - 1} complete frames")
    if sink is None:
        raise InputError(f"{src}: no complete frame ({warnings[-1] if warnings else 'no atom lines'})")
    steps = np.concatenate(steps)
    d = np.diff(steps)
    if d.size and np.any(d <= 0):
        k = int(np.flatnonzero(d <= 0)[0])
        warnings.append(f"the MD step goes from {steps[k]} to {steps[k + 1]} at frame {k + 2} (restarted run?)")
    return sink.finish(warnings)


def _bad_box(src, chunk, L, nb):
    for k in range(chunk.n_frames):
        for i in range(5, 8):
            toks = chunk.line(k * L + i).split()
            try:
                if len(toks) != nb:
                    raise ValueError
                [float(t) for t in toks]
            except ValueError:
                raise InputError(
                    f"{src} line {chunk.line0 + k * L + i}: expected {nb} box numbers in frame {chunk.frame0 + k}, "
                    f"got {chunk.line(k * L + i)[:60].decode('latin-1')!r}"
                ) from None
    raise InputError(f"{src} line {chunk.line0 + 5}: unreadable box bounds")


def _frame_error(src: str, buf: bytes, fno: int, lno: int, lay: _Layout) -> None:
    """Raise the InputError describing frame ``fno``'s header (which is not frame 1's)."""
    lines = _lines(buf, _P)
    if not lines or lines[0].strip() != b"ITEM: TIMESTEP":
        got = lines[0][:60].decode("latin-1") if lines else ""
        raise InputError(
            f"{src} line {lno}: expected 'ITEM: TIMESTEP' to start frame {fno}, got {got!r} "
            f"(frame {fno - 1} has more or fewer than {lay.n_atoms} atom lines?)"
        )
    if len(lines) > 3 and lines[3].strip() != str(lay.n_atoms).encode():
        raise InputError(
            f"{src} line {lno + 3}: frame {fno} has {lines[3].strip().decode('latin-1')} atoms, frame 1 had "
            f"{lay.n_atoms} (the same atoms must be in every frame)"
        )
    if len(lines) > 4 and lines[4].strip() != lay.box_line:
        raise InputError(
            f"{src} line {lno + 4}: frame {fno} changes the box line to {lines[4].strip().decode('latin-1')!r} "
            f"(frame 1: {lay.box_line.decode('latin-1')!r})"
        )
    if len(lines) > 8 and lines[8].strip() != lay.atoms_line:
        raise InputError(
            f"{src} line {lno + 8}: frame {fno} changes the columns to {lines[8].strip().decode('latin-1')!r} "
            f"(frame 1: {lay.atoms_line.decode('latin-1')!r})"
        )


def _tail(src: str, tail: bytes, fno: int, lno: int, lay: _Layout, warnings: list[str]) -> None:
    """The bytes after the last whole frame: an error if they show a different frame, else a warning."""
    _frame_error(src, tail, fno, lno, lay)
    n_lines = tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)
    atoms = max(0, n_lines - _P)
    if atoms > lay.n_atoms:  # pragma: no cover - whole frames are never in the tail
        raise InputError(f"{src} line {lno}: frame {fno} has more than {lay.n_atoms} atom lines")
    warnings.append(f"dropped incomplete last frame {fno} ({atoms} of {lay.n_atoms} atom lines): the file ends mid-frame")
