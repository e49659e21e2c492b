"""Shared machinery of the streaming readers: the frame store and the text chunker.

:class:`FrameSink` receives frames in blocks (fractional positions of every atom, one
cell per frame) and keeps only what the analysis needs: the selected atoms, in the
requested dtype, in one array grown in place. When the framework atoms are dropped,
their mean unwrapped displacement is accumulated on the way (a (T, 3) array), so drift
removal still works without them.

:func:`iter_text_frames` cuts a text stream into chunks of whole frames of a fixed
number of lines, with the line offsets found by one vectorised search per chunk.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.limits import check_atom_frames
from iondiff_core.trajectory import MOBILE_PREFERENCE, Trajectory, cell_problem

#: Decompressed bytes handled per chunk; bounds the readers' working memory.
CHUNK_BYTES = 4 << 20
#: Refuse numbers in atom columns (ids, positions, image flags) beyond this: a corrupt
#: file, and float32 positions or the unwrapping would overflow.
MAX_ABS_VALUE = 1e15
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_type_map(type_map) -> dict[str, str] | None:
    """``'1=Li,2=P'`` or ``{1: 'Li'}`` or ``['Li', 'P']`` -> ``{'1': 'Li', '2': 'P'}`` (None stays None)."""
    if type_map is None:
        return None
    if isinstance(type_map, str):
        out = {}
        for part in filter(None, (p.strip() for p in type_map.replace(";", ",").split(","))):
            key, sep, name = part.partition("=")
            if not sep or not key.strip() or not name.strip() or not name.strip()[0].isalpha():
                raise InputError(f"type map: expected TYPE=Element pairs like '1=Li,2=P', got {part!r}")
            out[key.strip()] = name.strip()
        if not out:
            raise InputError("type map: empty; expected TYPE=Element pairs like '1=Li,2=P'")
        return out
    if isinstance(type_map, dict):
        return {str(k).strip(): str(v).strip() for k, v in type_map.items()}
    return {str(i + 1): str(v) for i, v in enumerate(type_map)}


def map_types(types: list[str], type_map: dict[str, str] | None, src: str, what: str = "atom type") -> list[str]:
    """Species names of numeric types through ``type_map`` (every type must be mapped)."""
    if type_map is None:
        return list(types)
    missing = sorted(set(types) - set(type_map), key=lambda t: (len(t), t))
    if missing:
        raise InputError(
            f"{src}: the type map ({', '.join(f'{k}={v}' for k, v in type_map.items())}) "
            f"does not name {what}(s) {', '.join(missing)}"
        )
    return [type_map[t] for t in types]


def choose_kept(species: list[str], keep: str, mobile: str | None, src: str) -> np.ndarray | None:
    """File indices of the atoms to hold (None = all) for ``keep='all'|'mobile'``."""
    if keep == "all":
        return None
    if keep != "mobile":
        raise InputError(f"keep must be 'all' or 'mobile', got {keep!r}")
    symbols = list(dict.fromkeys(species))
    if mobile is None:
        mobile = next((s for s in MOBILE_PREFERENCE if s in symbols), None)
        if mobile is None:
            raise InputError(
                f"{src}: none of {', '.join(MOBILE_PREFERENCE)} is in the file "
                f"(it holds {', '.join(symbols)}); choose the mobile species explicitly"
            )
    if mobile not in symbols:
        raise InputError(f"{src}: species {mobile!r} is not in the file (it holds {', '.join(symbols)})")
    return np.flatnonzero(np.asarray(species) == mobile)


class FrameSink:
    """Frames collected block by block into one growing array.

    Parameters
    ----------
    species : list of str
        Species of every atom in the file.
    src : str
        The file, for messages.
    keep : {'all', 'mobile'}
        Hold every atom, or only those of ``mobile``.
    mobile : str, optional
        Mobile species for ``keep='mobile'``; default the first of
        :data:`~iondiff_core.trajectory.MOBILE_PREFERENCE` present.
    dtype : numpy dtype
        Storage type of the fractional positions (float32 halves the memory; its
        1e-7 relative precision is ~1e-6 Å on a 20 Å cell).
    capacity : int
        Frames to allocate up front (an estimate; the array grows in place if short).
    unwrapped : bool
        The positions are already unwrapped (image flags applied): no folding.
    """

    def __init__(self, species, src, keep="all", mobile=None, dtype=np.float64, capacity=64, unwrapped=False):
        self.src = src
        self.species_all = list(species)
        self.n_file = len(self.species_all)
        self.sel = choose_kept(self.species_all, keep, mobile, src)
        self.unwrapped = unwrapped
        if self.sel is not None:
            fw = np.setdiff1d(np.arange(self.n_file), self.sel)
            self.fw = fw if fw.size else None
            if self.sel.size == self.n_file:
                self.sel = None  # nothing to drop
        else:
            self.fw = None
        n = self.n_file if self.sel is None else self.sel.size
        self.dtype = np.dtype(dtype)
        self.cap = max(int(capacity), 1)
        self.positions = np.empty((self.cap, n, 3), dtype=self.dtype)
        self.cell0: np.ndarray | None = None
        self.cells: np.ndarray | None = None  # allocated at the first cell change only
        self.drift = np.empty((self.cap, 3)) if self.fw is not None else None
        self._fw_prev: np.ndarray | None = None
        self._drift_last = np.zeros(3)
        self.T = 0

    def _grow(self, need: int) -> None:
        if need <= self.cap:
            return
        self.cap = max(need, int(self.cap * 1.25) + 16)
        n = self.positions.shape[1]
        # ndarray.resize reallocs in place (large blocks are remapped, not copied).
        self.positions.resize((self.cap, n, 3), refcheck=False)
        if self.cells is not None:
            self.cells.resize((self.cap, 3, 3), refcheck=False)
        if self.drift is not None:
            self.drift.resize((self.cap, 3), refcheck=False)

    def add(self, frac: np.ndarray, cells: np.ndarray) -> None:
        """Store a block of frames.

        Parameters
        ----------
        frac : ndarray, shape (n, N_file, 3)
            Fractional positions of every atom (any float dtype).
        cells : ndarray, shape (n, 3, 3) or (3, 3)
            Cell of each frame (rows are lattice vectors, Å).
        """
        n = frac.shape[0]
        if n == 0:
            return
        cells = np.broadcast_to(np.asarray(cells, dtype=float), (n, 3, 3))
        a, b = self.T, self.T + n
        check_atom_frames(self.src, self.n_file, b)
        self._grow(b)
        self.positions[a:b] = frac if self.sel is None else frac[:, self.sel]
        if self.cell0 is None:
            self._check_cells(cells[:1], a)
            self.cell0 = np.array(cells[0])
        if self.cells is None and not np.array_equal(cells, np.broadcast_to(self.cell0, cells.shape)):
            self.cells = np.empty((self.cap, 3, 3))
            self.cells[:a] = self.cell0
        if self.cells is not None:
            self._check_cells(cells, a)
            self.cells[a:b] = cells
        if self.drift is not None:
            self._add_drift(frac[:, self.fw], cells, a, b)
        self.T = b

    def _check_cells(self, cells: np.ndarray, first: int) -> None:
        """Refuse an implausible cell (every format's backstop; readers name the line when they can)."""
        bad = cell_problem(cells)
        if bad:
            raise InputError(f"{self.src}: frame {first + bad[0] + 1}: {bad[1]}")

    def _add_drift(self, fw: np.ndarray, cells: np.ndarray, a: int, b: int) -> None:
        """Mean unwrapped displacement of the framework atoms from frame 0 (Å)."""
        if self.unwrapped:
            cart = np.einsum("tj,tjk->tk", fw.mean(axis=1, dtype=np.float64), cells)
            if self._fw_prev is None:
                self._fw_prev = cart[0].copy()
            self.drift[a:b] = cart - self._fw_prev
            return
        prev = self._fw_prev if self._fw_prev is not None else fw[0]
        steps = np.diff(np.concatenate([prev[None], fw]).astype(np.float64), axis=0)
        steps -= np.floor(steps + 0.5)
        mean_step = np.einsum("tj,tjk->tk", steps.mean(axis=1), cells)
        self.drift[a:b] = self._drift_last + np.cumsum(mean_step, axis=0)
        self._drift_last = self.drift[b - 1].copy()
        self._fw_prev = np.array(fw[-1], dtype=np.float64)

    def finish(self, warnings: list[str], timestep_fs=None, temperature_K=None) -> Trajectory:
        """The :class:`Trajectory` of everything stored (the arrays trimmed in place)."""
        T = self.T
        if T == 0:
            raise InputError(f"{self.src}: no complete frame")
        n = self.positions.shape[1]
        self.positions.resize((T, n, 3), refcheck=False)
        if self.cells is not None:
            self.cells.resize((T, 3, 3), refcheck=False)
        if self.drift is not None:
            self.drift.resize((T, 3), refcheck=False)
        if not np.isfinite(self.positions).all():
            t = int(np.flatnonzero(~np.isfinite(self.positions).reshape(T, -1).all(axis=1))[0])
            raise InputError(f"{self.src}: non-finite positions in frame {t + 1}")
        sel = self.sel
        species = self.species_all if sel is None else [self.species_all[i] for i in sel]
        return Trajectory(
            positions_frac=self.positions,
            cells=self.cells if self.cells is not None else self.cell0,
            species=species,
            timestep_fs=timestep_fs,
            temperature_K=temperature_K,
            source=self.src,
            warnings=warnings,
            unwrapped=self.unwrapped,
            atom_indices=sel,
            framework_drift_A=self.drift,
            file_species=None if sel is None else {s: self.species_all.count(s) for s in dict.fromkeys(self.species_all)},
        )


# --------------------------------------------------------------------------- text
@dataclass
class TextChunk:
    """Whole frames of a text file: ``buf[starts[i]:ends[i]]`` is line i (no newline).

    ``frame0`` (1-based) and ``line0`` (1-based) number the first frame and line.
    """

    buf: bytes
    starts: np.ndarray
    ends: np.ndarray
    n_frames: int
    frame0: int
    line0: int

    def line(self, i: int) -> bytes:
        return self.buf[self.starts[i] : self.ends[i]]

    def join(self, first: int, count: int, per_frame: int, n_frames: int | None = None) -> bytes:
        """Lines ``first .. first+count-1`` of every frame (of ``per_frame`` lines), joined."""
        mv = memoryview(self.buf)
        k = self.n_frames if n_frames is None else n_frames
        idx = np.arange(k) * per_frame + first
        a, b = self.starts[idx], self.ends[idx + count - 1]
        text = b"\n".join(mv[x:y] for x, y in zip(a.tolist(), b.tolist()))
        return text + b"\n"


def line_offsets(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, before any ``\\r``) of every newline-terminated line."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    cr = ends > starts
    cr[cr] = arr[ends[cr] - 1] == 13
    return starts, ends - cr


def iter_text_frames(stream, lines_per_frame: int, check, chunk_bytes: int = CHUNK_BYTES):
    """Yield :class:`TextChunk` of whole frames, then the incomplete rest.

    Parameters
    ----------
    stream : binary file
    lines_per_frame : int
    check : callable(TextChunk)
        Checks the frame headers of a chunk (raises InputError naming the frame).
    chunk_bytes : int

    Yields
    ------
    TextChunk
        Chunks of whole frames; the last item is ``(tail_bytes, frame0, line0)``: what
        follows the last whole frame (empty for a complete file).
    """
    L = lines_per_frame
    buf = b""
    frame0, line0 = 1, 1
    eof = False
    want = chunk_bytes
    while True:
        while not eof and len(buf) < want:
            piece = stream.read(want - len(buf))
            if not piece:
                eof = True
                if buf and not buf.endswith(b"\n"):
                    # No newline at the end: keep the last line if it has as many fields
                    # as the one before it (else it was cut and stays in the tail).
                    cut = buf.rfind(b"\n")
                    prev = buf.rfind(b"\n", 0, max(cut, 0)) + 1
                    if cut >= 0 and len(buf[cut + 1 :].split()) == len(buf[prev:cut].split()):
                        buf += b"\n"
                break
            buf += piece
        starts, ends = line_offsets(buf)
        n = len(starts) // L
        if n == 0:
            if eof:
                break
            want = max(want * 2, len(buf) * 2)  # one frame larger than the chunk
            continue
        chunk = TextChunk(buf, starts[: n * L], ends[: n * L], n, frame0, line0)
        check(chunk)
        yield chunk
        # After the newline that ends the last whole frame (a partial line may follow).
        cut = int(starts[n * L]) if n * L < len(starts) else buf.rfind(b"\n") + 1
        buf = buf[cut:]
        frame0 += n
        line0 += n * L
        want = chunk_bytes
        if eof:
            break
    yield (buf, frame0, line0)


def parse_columns(text: bytes, ncols: int, usecols: list[int], rows: int) -> np.ndarray | None:
    """(rows, len(usecols)) float64 from whitespace-separated lines, or None if malformed."""
    import pandas as pd

    try:
        df = pd.read_csv(
            io.BytesIO(text),
            sep=r"\s+",
            header=None,
            names=list(range(ncols)),
            usecols=usecols,
            index_col=False,
            dtype={c: np.float64 for c in usecols},
            engine="c",
            skip_blank_lines=False,
            na_filter=False,
        )
    except Exception:  # pandas parse errors: the caller finds and names the line
        return None
    if len(df) != rows or df.shape[1] != len(usecols):
        return None
    out = df.to_numpy(dtype=np.float64)
    if list(usecols) != sorted(usecols):  # pandas returns file order; reorder to the order asked for
        out = out[:, np.argsort(np.argsort(usecols))]
    return out if (np.abs(out) <= MAX_ABS_VALUE).all() else None  # NaN fails too


def diagnose_lines(src: str, chunk: TextChunk, first: int, count: int, per_frame: int, ncols: int, numeric: list[int], what: str) -> None:
    """Raise an InputError naming the first malformed body line of ``chunk`` (slow path)."""
    for k in range(chunk.n_frames):
        for j in range(first, first + count):
            i = k * per_frame + j
            raw = chunk.line(i).decode("utf-8", "replace")
            toks = raw.split()
            where = f"{src} line {chunk.line0 + i}"
            frame = chunk.frame0 + k
            if len(toks) != ncols:
                raise InputError(
                    f"{where}: expected {ncols} columns ({what}) in frame {frame}, got {len(toks)}: {raw[:60]!r}"
                )
            for c in numeric:
                if not _FLOAT_RE.match(toks[c]):
                    kind = "non-finite" if toks[c].lower().lstrip("+-") in ("nan", "inf", "infinity") else "not a number"
                    raise InputError(f"{where}: {toks[c]!r} is {kind} (frame {frame}): {raw[:60]!r}")
                if abs(float(toks[c])) > MAX_ABS_VALUE:
                    raise InputError(f"{where}: {toks[c]!r} is beyond ±{MAX_ABS_VALUE:.0e}, a corrupt file (frame {frame})")
    raise InputError(f"{src} lines {chunk.line0}-{chunk.line0 + len(chunk.starts) - 1}: could not read the {what}")


def estimate_frames(path, stream, head_bytes: int, bytes_per_frame: float) -> int:
    """Frames to allocate: from the file size for plain files, else a generous guess."""
    import os

    if getattr(stream, "kind", None) is None:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = head_bytes
    else:
        size = head_bytes * 4
    return int(size / max(bytes_per_frame, 1.0) * 1.01) + 2


class Prefixed:
    """A binary stream with some bytes already read put back in front."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.stream.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.stream.read(n)


def read_head(stream, min_lines: int, limit: int = 64 << 20) -> bytes:
    """At least ``min_lines`` lines from the start of ``stream`` (fewer at its end)."""
    buf = b""
    step = 1 << 16
    while buf.count(b"\n") < min_lines and len(buf) < limit:
        piece = stream.read(step)
        if not piece:
            break
        buf += piece
        step = min(step * 2, 16 << 20)
    return buf


def auto_chunk(path, stream, bytes_per_frame: float, n_keep: int, itemsize: int, chunk_bytes: int) -> int:
    """Chunk size so the reader's working memory stays a small part of its output.

    A chunk of text costs about ten times its size while parsed (line offsets, the
    joined atom lines, pandas' columns, the float64 block); the output is
    ``frames x n_keep x 3 x itemsize``. Chunks are kept at about 1/16 of the output
    (between 256 kB and ``chunk_bytes``), so a mobile-only float32 read peaks below 2x
    its output once that is over ~4 MB (below, the peak is a few MB at most).
    Compressed files (length unknown) use ``chunk_bytes``.
    """
    import os

    if getattr(stream, "kind", None) is not None:
        return chunk_bytes
    try:
        size = os.path.getsize(path)
    except OSError:
        return chunk_bytes
    out = size / max(bytes_per_frame, 1.0) * n_keep * 3 * itemsize
    return int(min(chunk_bytes, max(256 << 10, out / 16)))
