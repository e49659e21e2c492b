"""VASP XDATCAR reader and writer (METHOD.md section 0).

The reader is built for files of hundreds of MB: the decompressed text is streamed in
chunks of whole frames, frame boundaries are found with ``bytes.find`` (one call per
frame, never one per line), and each chunk's coordinate lines go through pandas' C
tokenizer in one call. Python only loops over lines when something is already wrong,
to name the offending line.

Supported: VASP 5 headers (species line) and VASP 4 headers (no species line: species
from ``species=``, a coordinate-line label, a POTCAR beside the file, or the title),
``Direct`` and ``Cartesian`` blocks, a fixed cell or a full header before every frame
(variable cell, ISIF >= 3), one or three scale factors, a negative scale (= volume in
Å^3), pymatgen's species label after each coordinate line, plain, gzip, xz and bzip2
files (recognised by their magic bytes).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.limits import active as active_limits
from iondiff_core.io.limits import check_atom_frames, check_text_bytes, open_regular
from iondiff_core.trajectory import MIN_CELL_SHAPE, Trajectory, cell_problem

#: Refuse headers claiming more atoms than this (a corrupt or hostile count line).
MAX_ATOMS = 10_000_000
#: Refuse coordinates larger than this in absolute value (fractional: cells; Cartesian: Å):
#: no trajectory holds them, and float32 or the unwrapping would overflow.
MAX_ABS_COORD = 1e8
#: Decompressed bytes parsed per chunk; bounds the reader's working memory.
CHUNK_BYTES = 4 << 20
#: Worker threads parsing chunks (pandas releases the GIL); capped by the CPU count.
_WORKERS = 2
#: Compressed bytes fed to the decompressor per read.
_RAW_READ = 1 << 20

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"))
_BZ2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")  # 'BZh' alone could begin a text title
_COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2")
# Bytes that never occur in a text file (control characters other than whitespace).
_TEXT_BYTES = bytes(range(32, 256)) + b"\t\n\r\x0b\x0c"
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_WS = b" \t\r\n\x0b\x0c"


# --------------------------------------------------------------------------- files
def compression_of(path: str | Path) -> str | None:
    """Compression of a file from its magic bytes: ``'gzip'``, ``'xz'``, ``'bz2'`` or None."""
    with open_regular(path) as f:
        try:
            head = f.read(10)
        except OSError as e:
            raise InputError(f"{path}: read error ({e.strerror or e})") from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "bz2" if _BZ2_MAGIC.match(head) else None


def strip_compression_suffix(name: str) -> str:
    """File name without a trailing ``.gz``, ``.xz`` or ``.bz2``."""
    for suf in _COMPRESSED_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


class DecompressedStream(io.RawIOBase):
    """Binary reader of a plain or compressed file that survives truncation.

    Unlike :func:`gzip.open`, a stream cut short (an interrupted copy) yields all the
    data that could be decompressed and sets :attr:`truncated` instead of raising, so
    the reader can drop the incomplete last frame with a warning. Concatenated members
    (pigz, pbzip2, multi-stream xz) are followed. Corrupt data raises InputError.

    Only regular files are opened (see :func:`~iondiff_core.io.limits.open_regular`), and
    the text is counted against the active ``max_text_bytes``
    (:class:`~iondiff_core.io.limits.ReadLimits`): a plain file over it is refused before
    reading, a compressed one as soon as its decompressed text passes it.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = str(path)
        self._f = open_regular(path)
        try:
            self.kind = compression_of(path)
            if self.kind is None:
                check_text_bytes(self.path, os.fstat(self._f.fileno()).st_size)
        except BaseException:
            self._f.close()
            raise
        self.truncated = False
        self.text_bytes = 0  # decompressed bytes produced so far
        self._dec = self._new_decoder()
        self._tail = b""  # compressed bytes read but not yet decompressed
        self._trailing_garbage = False
        self._pending = b""
        self._eof = False

    def _new_decoder(self):
        if self.kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.kind == "xz":
            return lzma.LZMADecompressor()
        if self.kind == "bz2":
            return bz2.BZ2Decompressor()
        return None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Return at most ``size`` bytes (all the rest if ``size`` < 0), b'' at the end."""
        if size is None or size < 0:
            parts = [self._pending]
            self._pending = b""
            while chunk := self._next_chunk(_RAW_READ):
                parts.append(chunk)
            return b"".join(parts)
        parts, have = [], 0
        while have < size:  # whole reads, like a plain file: pieces are bounded, not the request
            if not self._pending:
                self._pending = self._next_chunk(size - have)
                if not self._pending:
                    break
            take, self._pending = self._pending[: size - have], self._pending[size - have :]
            parts.append(take)
            have += len(take)
        return b"".join(parts)

    readall = read

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _next_chunk(self, size: int) -> bytes:
        """The next piece of the decompressed data, at most ``max(size, 64 KiB)`` bytes
        (so a small input that inflates a thousandfold never lands in memory at once);
        b'' at the end."""
        if self._eof:
            return b""
        if self._dec is None:
            try:
                out = self._f.read(max(size, 1))
            except OSError as e:
                raise InputError(f"{self.path}: read error ({e.strerror or e})") from None
            return self._count(out)
        limit = max(size, 65536)
        while True:
            try:
                out = self._step(limit)
            except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
                raise InputError(f"{self.path}: corrupt {self.kind} data ({e})") from None
            if out:
                return self._count(out)
            if self._trailing_garbage:
                self._eof = True
                return b""
            if out is None:  # the decoder needs more compressed bytes
                try:
                    raw = self._f.read(max(limit // 4, 65536))  # text compresses about 4x
                except OSError as e:
                    raise InputError(f"{self.path}: read error ({e.strerror or e})") from None
                if not raw:
                    self._eof = True
                    if not self._dec.eof:
                        self.truncated = True
                    return b""
                self._tail += raw

    def _count(self, out: bytes) -> bytes:
        self.text_bytes += len(out)
        check_text_bytes(self.path, self.text_bytes)
        return out

    def _step(self, limit: int) -> bytes | None:
        """Up to ``limit`` decompressed bytes from the compressed bytes held; None when the
        decoder needs more. A finished member followed by more data is a concatenated
        stream (pigz, pbzip2, multi-stream xz): a new decoder takes over."""
        dec = self._dec
        if dec.eof:
            rest = dec.unused_data + self._tail
            self._tail = b""
            if not rest:
                return None  # between members: more input may start another one
            if self.kind == "gzip" and not rest.startswith(b"\x1f\x8b"):
                self._trailing_garbage = True  # ignored, as gzip does
                return b""
            self._dec = dec = self._new_decoder()
            self._tail = rest
        if self.kind == "gzip":
            if not self._tail:
                return None
            out = dec.decompress(self._tail, limit)
            self._tail = dec.unconsumed_tail  # what max_length left unread
            return out
        if not self._tail and dec.needs_input:
            return None
        out = dec.decompress(self._tail, limit)  # lzma/bz2 keep what max_length left inside
        self._tail = b""
        return out

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def open_decompressed(path: str | Path) -> DecompressedStream:
    """Open a plain, gzip, xz or bzip2 file for binary reading (detected by magic bytes)."""
    return DecompressedStream(path)


# --------------------------------------------------------------------------- helpers
def _element_symbols() -> frozenset[str]:
    try:
        from ase.data import chemical_symbols
    except ImportError:  # pragma: no cover - ase is a dependency
        return frozenset()
    return frozenset(chemical_symbols[1:])


_ELEMENTS = _element_symbols()


def clean_species_label(token: str) -> str:
    """``'Li_sv'`` -> ``'Li'``, ``'Li/8a4f...'`` -> ``'Li'`` (POTCAR flavours and VASP 6 hashes)."""
    return re.split(r"[_/.:]", token, maxsplit=1)[0]


def _short(text: str, limit: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dec(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


def _floats(text: str) -> list[float] | None:
    toks = text.split()
    if not toks or not all(_FLOAT_RE.match(t) for t in toks):
        return None
    return [float(t) for t in toks]


def _check_text(head: bytes, src: str) -> None:
    bad = head.translate(None, _TEXT_BYTES)
    if bad:
        raise InputError(f"{src}: this is a binary file, not a text XDATCAR")


def _scale_cell(scale: np.ndarray, lattice: np.ndarray, src: str, line: int) -> np.ndarray:
    """Cell in Å from the raw lattice block and the scale line (VASP POSCAR rules)."""
    if scale.size == 1:
        s = float(scale[0])
        if s < 0:  # a negative scale is the target volume in Å^3
            vol = abs(np.linalg.det(lattice))
            if vol == 0:
                raise InputError(f"{src} line {line + 1}: the cell vectors are linearly dependent")
            s = (-s / vol) ** (1.0 / 3.0)
        return lattice * s
    return lattice * scale[None, :]  # three factors scale the x, y, z components


# --------------------------------------------------------------------------- header
class _Header:
    """What the first lines of an XDATCAR say (line numbers are 1-based)."""

    title: str
    scale: np.ndarray
    lattice: np.ndarray
    cell: np.ndarray
    type_names: list[str]
    counts: list[int]
    n_atoms: int
    n_header: int  # lines before the first marker line (7 for VASP 5, 6 for VASP 4)
    cartesian: bool
    marker_word: bytes
    marker_offset: int
    labelled: bool  # pymatgen-style species label after the coordinates
    species_line: bytes | None
    counts_line: bytes
    warnings: list[str]


def _parse_scale(text: str, src: str, line: int) -> np.ndarray:
    vals = _floats(text)
    if vals is None or len(vals) not in (1, 3):
        raise InputError(
            f"{src} line {line}: the scale factor must be one number (or three), got {_short(text)!r}"
        )
    scale = np.array(vals)
    if not np.all(np.isfinite(scale)) or np.any(scale == 0) or (scale.size == 3 and np.any(scale < 0)):
        raise InputError(f"{src} line {line}: invalid scale factor {_short(text)!r}")
    return scale


def _parse_lattice(lines: list[str], src: str, first_line: int) -> np.ndarray:
    rows = []
    for i, text in enumerate(lines):
        vals = _floats(text)
        if vals is None or len(vals) != 3:
            raise InputError(
                f"{src} line {first_line + i}: the cell vector must be three numbers, got {_short(text)!r}"
            )
        rows.append(vals)
    lat = np.array(rows)
    if not np.all(np.isfinite(lat)):
        raise InputError(f"{src} line {first_line}: the cell holds non-finite numbers")
    unit = lat / max(np.abs(lat).max(), 1e-300)  # the shape, whatever the magnitude (scaled later)
    with np.errstate(all="ignore"):
        shape = abs(np.linalg.det(unit)) / np.prod(np.linalg.norm(unit, axis=1))
    if not shape >= MIN_CELL_SHAPE:
        raise InputError(f"{src} line {first_line}: the cell vectors are linearly dependent (zero volume)")
    return lat


def _species_from_potcar(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    potcar = path.parent / "POTCAR"
    if not potcar.is_file():
        return None
    try:
        text = potcar.read_bytes()[: 64 << 20].decode("latin-1")
    except OSError:
        return None
    names = re.findall(r"TITEL\s*=\s*\S+\s+(\S+)", text)
    if not names:
        names = re.findall(r"VRHFIN\s*=\s*([A-Za-z]+)\s*:", text)
    return [clean_species_label(n) for n in names] or None


def _parse_header(buf: bytes, src: str, path: Path | None, species: list[str] | None) -> _Header:
    h = _Header()
    h.warnings = []
    lines = buf.split(b"\n", 10)
    text = [_dec(x) for x in lines[:10]]
    if len(text) < 2:
        raise InputError(f"{src}: not an XDATCAR (only {len(text)} line)")
    # VASP 4.x XDATCARs start with 'NIONS NIONS NBLOCK' and hold no cell at all.
    t1, t2 = text[0].split(), text[1].split()
    if 3 <= len(t1) <= 4 and all(_INT_RE.match(t) for t in t1) and len(t2) == 5 and _floats(text[1]):
        raise InputError(
            f"{src} line 1: this is a VASP 4.x XDATCAR, which stores no cell; "
            "convert it to the VASP 5 format (e.g. with ASE or pymatgen and the POSCAR)"
        )
    h.title = text[0].strip()
    h.scale = _parse_scale(text[1], src, 2)
    if len(text) < 8:
        raise InputError(f"{src}: not an XDATCAR (the header needs at least 8 lines, found {len(text)})")
    h.lattice = _parse_lattice(text[2:5], src, 3)
    h.cell = _scale_cell(h.scale, h.lattice, src, 2)
    bad = cell_problem(h.cell)
    if bad:
        raise InputError(f"{src} lines 2-5: {bad[1]} (scale {_short(text[1])!r})")

    t6 = text[5].split()
    if not t6:
        raise InputError(f"{src} line 6: expected species names or atom counts, got an empty line")
    if all(_INT_RE.match(t) for t in t6):  # VASP 4: no species line
        counts_idx, h.species_line, names = 5, None, None
    else:
        bad = [t for t in t6 if not t[0].isalpha()]
        if bad:
            raise InputError(
                f"{src} line 6: species names must start with a letter, got {_short(text[5])!r}"
            )
        counts_idx, h.species_line, names = 6, lines[5].strip(), [clean_species_label(t) for t in t6]
    ctext = text[counts_idx]
    ctoks = ctext.split()
    if not ctoks or not all(_INT_RE.match(t) for t in ctoks):
        raise InputError(
            f"{src} line {counts_idx + 1}: the atom counts must be whole numbers, got {_short(ctext)!r}"
        )
    h.counts = [int(t) for t in ctoks]
    h.counts_line = lines[counts_idx].strip()
    if any(c < 0 for c in h.counts) or sum(h.counts) == 0:
        raise InputError(f"{src} line {counts_idx + 1}: invalid atom counts {_short(ctext)!r}")
    h.n_atoms = sum(h.counts)
    if h.n_atoms > MAX_ATOMS:
        raise InputError(
            f"{src} line {counts_idx + 1}: the header claims {h.n_atoms:,} atoms "
            f"(more than {MAX_ATOMS:,}); the file is corrupt or not an XDATCAR"
        )
    if names is not None and len(names) != len(h.counts):
        raise InputError(
            f"{src} line 6: {len(names)} species names ({_short(text[5])!r}) "
            f"for {len(h.counts)} atom counts on line 7 ({_short(ctext)!r})"
        )

    h.n_header = counts_idx + 1
    mtext = text[h.n_header] if len(text) > h.n_header else ""
    mtoks = mtext.split()
    if not mtoks or mtoks[0][0] not in "DdCcKk":
        if mtoks and mtoks[0][0] in "Ss":
            msg = "selective dynamics is not an XDATCAR feature (is this a POSCAR?)"
        else:
            msg = f"expected 'Direct configuration=' or 'Cartesian configuration=', got {_short(mtext)!r}"
        raise InputError(f"{src} line {h.n_header + 1}: {msg}")
    h.cartesian = mtoks[0][0] in "CcKk"
    h.marker_word = mtoks[0].encode()
    h.marker_offset = sum(len(x) + 1 for x in lines[: h.n_header])

    # First coordinate line: three numbers, optionally followed by a species label.
    first = text[h.n_header + 1] if len(text) > h.n_header + 1 else ""
    ftoks = first.split()
    h.labelled = len(ftoks) == 4 and ftoks[3][0].isalpha()
    if ftoks and not (len(ftoks) == 3 or h.labelled):
        raise InputError(
            f"{src} line {h.n_header + 2}: expected three coordinates, got {_short(first)!r}"
        )

    h.type_names = _resolve_species(h, names, species, buf, src, path)
    return h


def _labels_of_first_frame(h: _Header, buf: bytes) -> list[str] | None:
    start = buf.find(b"\n", h.marker_offset) + 1
    lines = buf[start:].split(b"\n", h.n_atoms)[: h.n_atoms]
    if len(lines) < h.n_atoms:
        return None
    labels = []
    for ln in lines:
        toks = ln.split()
        if len(toks) < 4:
            return None
        labels.append(clean_species_label(toks[3].decode("utf-8", "replace")))
    return labels


def _resolve_species(h, names, species, buf, src, path) -> list[str]:
    """Species of each atom type, from the header or, for VASP 4, from elsewhere."""
    ntypes = len(h.counts)
    given = None
    if species is not None:
        species = [clean_species_label(str(s)) for s in species]
        if len(species) == ntypes:
            given = species
        elif len(species) == h.n_atoms:
            # One label per atom: collapse to one per type (must be uniform per block).
            given, i = [], 0
            for c in h.counts:
                block = set(species[i : i + c])
                if len(block) > 1:
                    raise InputError(f"{src}: species= mixes {sorted(block)} within one atom block")
                given.append(species[i])
                i += c
        else:
            raise InputError(
                f"{src}: species= has {len(species)} names but the file has {ntypes} atom types "
                f"({h.n_atoms} atoms)"
            )
    if names is not None:
        if given is not None and given != names:
            h.warnings.append(f"species {' '.join(given)} given explicitly override the file's {' '.join(names)}")
            return given
        unknown = [n for n in names if _ELEMENTS and n not in _ELEMENTS]
        if unknown:
            h.warnings.append(f"species label(s) {', '.join(unknown)} on line 6 are not chemical elements")
        return names
    if given is not None:
        return given
    # VASP 4 header: look for the species elsewhere, most reliable first.
    if h.labelled:
        labels = _labels_of_first_frame(h, buf)
        if labels:
            out, i = [], 0
            for c in h.counts:
                out.append(labels[i] if c else "X")
                i += c
            return out
    potcar = _species_from_potcar(path)
    if potcar is not None:
        if len(potcar) == ntypes:
            h.warnings.append(f"VASP 4 header: species {' '.join(potcar)} taken from the POTCAR beside it")
            return potcar
        h.warnings.append(f"the POTCAR beside it lists {len(potcar)} species for {ntypes} atom types; ignored")
    toks = h.title.split()
    if len(toks) == ntypes and _ELEMENTS and all(t in _ELEMENTS for t in toks):
        h.warnings.append(f"VASP 4 header: species {' '.join(toks)} taken from the title line; check them")
        return toks
    raise InputError(
        f"{src} line 6: VASP 4 header without species names for the {ntypes} atom types "
        f"({' '.join(map(str, h.counts))}); give them (species=[...]) or put the POTCAR beside the file"
    )


# --------------------------------------------------------------------------- body
def _parse_block(text: bytes, ncols: int) -> np.ndarray:
    """(rows, 3) float64 from whitespace-separated coordinate lines (C tokenizer)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return np.loadtxt(io.BytesIO(text), dtype=np.float64, usecols=(0, 1, 2), ndmin=2)
    df = pd.read_csv(
        io.BytesIO(text),
        sep=r"\s+",
        header=None,
        names=list(range(ncols)),
        usecols=None if ncols == 3 else [0, 1, 2],  # without usecols, extra columns are an error
        index_col=False,
        dtype=np.float64 if ncols == 3 else {0: np.float64, 1: np.float64, 2: np.float64},
        engine="c",
        skip_blank_lines=True,
        na_filter=True,
    )
    return df.to_numpy(dtype=np.float64)


def _parse_checked(text: bytes, ncols: int, rows: int) -> np.ndarray | None:
    """Parsed (rows, 3) coordinates, or None if anything is off (then diagnose)."""
    try:
        arr = _parse_block(text, ncols)
    except Exception:  # pandas/numpy parse errors: the caller finds and names the line
        return None
    if arr.shape != (rows, 3) or not (np.abs(arr) <= MAX_ABS_COORD).all():  # NaN fails too
        return None
    return arr


def _initial_capacity(stream, path, buf: bytes, lines_per_frame: int) -> int:
    """Frames to allocate up front: from the file size for plain files, else a guess."""
    nl = buf.count(b"\n")
    bytes_per_frame = max(len(buf) / max(nl, 1) * lines_per_frame, 1.0)
    size = len(buf)
    if getattr(stream, "kind", None) is None and path is not None:
        try:
            size = path.stat().st_size
        except OSError:
            pass
    else:
        size *= 4  # compressed: unknown length, grow from there
    return int(size / bytes_per_frame * 1.02) + 2


def _diagnose(src: str, buf: bytes, blocks: list[tuple[int, int, int, int]], ncols: int, n_atoms: int) -> None:
    """Find the first bad coordinate line of ``blocks`` and raise an InputError naming it.

    ``blocks`` holds (frame number, start offset, end offset, line number of the first
    coordinate line). Only called after the fast parser failed, so a Python loop is fine.
    """
    for frame, a, b, line0 in blocks:
        for i, raw in enumerate(buf[a:b].split(b"\n")[:n_atoms]):
            line = _dec(raw)
            toks = line.split()
            where = f"{src} line {line0 + i}"
            if not toks:
                raise InputError(f"{where}: empty line inside frame {frame}")
            if len(toks) < 3 or (ncols == 3 and len(toks) != 3) or (ncols == 4 and len(toks) > 4):
                raise InputError(
                    f"{where}: expected {'three coordinates' if ncols == 3 else 'three coordinates and a label'} "
                    f"(frame {frame}), got {len(toks)} columns: {_short(line)!r}"
                )
            for tok in toks[:3]:
                if not _FLOAT_RE.match(tok):
                    low = tok.lower().lstrip("+-")
                    if low in ("nan", "inf", "infinity"):
                        raise InputError(f"{where}: non-finite coordinate {tok!r} (frame {frame})")
                    raise InputError(f"{where}: {tok!r} is not a number (frame {frame}): {_short(line)!r}")
            if not all(np.isfinite(float(t)) for t in toks[:3]):
                raise InputError(f"{where}: non-finite coordinate in {_short(line)!r} (frame {frame})")
            if not all(abs(float(t)) <= MAX_ABS_COORD for t in toks[:3]):
                raise InputError(
                    f"{where}: coordinate beyond ±{MAX_ABS_COORD:.0e} in {_short(line)!r} (frame {frame}): a corrupt file"
                )
    first, last = blocks[0], blocks[-1]
    raise InputError(
        f"{src} lines {first[3]}-{last[3] + n_atoms - 1}: could not read the coordinates (frames {first[0]}-{last[0]})"
    )


class _Body:
    """Streaming state of the frame loop."""

    def __init__(self, stream: DecompressedStream, src: str, chunk_bytes: int):
        self.stream = stream
        self.src = src
        self.chunk = chunk_bytes
        self.buf = b""
        self.eof = False

    def fill(self, min_bytes: int) -> None:
        if self.eof or len(self.buf) >= min_bytes:
            return
        parts = [self.buf]
        have = len(self.buf)
        while have < min_bytes:
            piece = self.stream.read(min(self.chunk, max(min_bytes - have, 1 << 16)))
            if not piece:
                self.eof = True
                break
            parts.append(piece)
            have += len(piece)
        self.buf = b"".join(parts)


def read_xdatcar(
    path: str | Path,
    species: list[str] | None = None,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    keep: str = "all",
    mobile: str | None = None,
    dtype=np.float64,
) -> Trajectory:
    """Read a VASP XDATCAR (plain, .gz, .xz or .bz2).

    Parameters
    ----------
    path : str or Path
        The XDATCAR file.
    species : list of str, optional
        Species of each atom type (or of each atom). Needed only for a VASP 4 header
        without a species line and no POTCAR beside the file; overrides the file's.
    chunk_bytes : int
        Decompressed bytes parsed at a time (working memory of the reader).
    keep, mobile, dtype
        Hold every atom or only the ``mobile`` species, in ``dtype`` (see
        :func:`iondiff_core.io.read_trajectory`); chosen inside the parse loop, so the
        framework and float64 copies are never held.

    Returns
    -------
    Trajectory
        Fractional positions (T, N, 3), cells in Å (a broadcast (3, 3) for a fixed
        cell), species; ``timestep_fs`` and ``temperature_K`` are None (they live in the
        INCAR, see :func:`iondiff_core.io.read_trajectory`).

    Raises
    ------
    InputError
        For anything malformed, naming the file and the 1-based line. A truncated last
        frame is not an error: it is dropped and a message added to ``warnings``.
    """
    path = Path(path)
    src = str(path)
    if path.is_dir():
        raise InputError(f"{src}: is a folder; give the XDATCAR file (or use read_trajectory)")
    with open_decompressed(path) as stream:
        try:
            return _read_stream(stream, src, path, species, chunk_bytes, keep, mobile, dtype)
        except MemoryError:
            raise InputError(f"{src}: the trajectory does not fit in memory") from None


def _read_stream(stream, src, path, species, chunk_bytes, keep="all", mobile=None, dtype=np.float64) -> Trajectory:
    try:  # import here, not first inside a worker thread
        import pandas  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    body = _Body(stream, src, max(int(chunk_bytes), 1 << 16))
    body.fill(1 << 16)
    # Make sure the header and the first coordinate line are in the buffer.
    while not body.eof and body.buf.count(b"\n", 0, 1 << 20) < 10 and len(body.buf) < (1 << 20):
        body.fill(len(body.buf) * 2)
    head = body.buf[:65536]
    if not body.buf.strip(_WS):
        raise InputError(f"{src}: the file is empty")
    _check_text(head, src)
    if body.buf.count(b"\n", 0, 1 << 20) < 8 and len(body.buf) >= (1 << 20):
        raise InputError(f"{src}: not an XDATCAR (no line break in the first MB)")
    if not body.eof:  # VASP 4 headers may need the first frame's labels
        body.fill(min(len(body.buf) + 200 * 1024 + 100 * _guess_atoms(body.buf), 64 << 20))
    hdr = _parse_header(body.buf, src, path, species)
    warnings = list(hdr.warnings)
    N = hdr.n_atoms
    ncols = 4 if hdr.labelled else 3
    word = hdr.marker_word

    def find_marker(start: int) -> int:
        """Offset of the next marker line start at or after ``start`` (-1 if none in buf)."""
        buf = body.buf
        while True:
            i = buf.find(word, start)
            if i < 0:
                return -1
            j = i - 1
            while j >= 0 and buf[j] in b" \t":
                j -= 1
            if j < 0 or buf[j] == 10:
                return j + 1
            start = i + 1

    def line_start_back(pos: int, n: int) -> int:
        """Start of the line ``n`` lines above the line starting at ``pos``."""
        for _ in range(n):
            pos = body.buf.rfind(b"\n", 0, pos - 1) + 1
        return pos

    # ---- fixed or variable cell: count the lines between the first two markers
    m0 = hdr.marker_offset
    m1 = find_marker(m0 + 1)
    while m1 < 0 and not body.eof:
        body.fill(len(body.buf) * 2)
        m1 = find_marker(m0 + 1)
    variable = False
    if m1 >= 0:
        between = body.buf.count(b"\n", m0, m1) - 1
        if between == N + hdr.n_header:
            variable = True
        elif between != N:
            line_m1 = 1 + body.buf.count(b"\n", 0, m1)
            if between < N:
                raise InputError(
                    f"{src} line {line_m1}: frame 1 ends after {between} of {N} atom lines "
                    f"(the next {_dec(word)!r} line comes early)"
                )
            raise InputError(
                f"{src} line {hdr.n_header + 2 + N}: frame 1 has {between} lines before the next "
                f"{_dec(word)!r} line, expected {N} atoms (or {N + hdr.n_header} with a cell header per frame)"
            )
    P = hdr.n_header + 1 if variable else 1  # lines before the coordinates in a frame's region
    L = P + N  # lines per frame
    fixed_cell = hdr.cell

    # ---- drop what precedes frame 1's region; buf then always starts at a region
    if not variable:
        body.buf = body.buf[m0:]
        line0 = hdr.n_header + 1
    else:
        line0 = 1
    head_ref = (hdr.species_line, hdr.counts_line)

    # The frame store keeps the atoms asked for, in the dtype asked for, growing in place.
    from iondiff_core.io.frames import FrameSink

    species_per_atom = [s for s, c in zip(hdr.type_names, hdr.counts) for _ in range(c)]
    sink = FrameSink(species_per_atom, src, keep, mobile, dtype, _initial_capacity(stream, path, body.buf, L))
    # Chunks small next to the output, so a mobile-only read peaks below 2x its output.
    from iondiff_core.io.frames import auto_chunk

    per_frame = len(body.buf) / max(body.buf.count(b"\n"), 1) * L
    body.chunk = auto_chunk(path, stream, per_frame, sink.positions.shape[1], sink.dtype.itemsize, body.chunk)
    cap = getattr(active_limits(), "max_atom_frames", None)
    if cap is not None:  # chunks no larger than the frames allowed: the read stops near the cap
        body.chunk = int(min(body.chunk, max(per_frame * (cap // N + 2), 1 << 16)))
    T_sub = 0  # frames submitted for parsing
    last_frame_note = None

    def store(job) -> None:
        """Wait for one chunk's parse and hand it to the frame store (in submission order)."""
        future, text, blocks, frame_cells = job
        arr = future.result()
        n = len(blocks)
        if arr is None:
            _diagnose(src, text, blocks, ncols, N)
        frac = arr.reshape(n, N, 3)
        if hdr.cartesian:
            # Cartesian lines are scaled like the lattice, so the scale factor(s) cancel:
            # frac = (x s) inv(L s) = x inv(L), with L the unscaled lattice block.
            if variable:
                frac = np.einsum("tnj,tjk->tnk", frac, np.linalg.inv(frame_cells[1]))
            else:
                frac = frac @ np.linalg.inv(hdr.lattice)
        sink.add(frac, frame_cells[0] if variable else fixed_cell)

    # pandas' tokenizer releases the GIL: parse chunks in worker threads while this
    # thread decompresses and slices the next one. Few jobs in flight bound the memory.
    n_workers = max(1, min(_WORKERS, os.cpu_count() or 1))
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        while True:
            body.fill(body.chunk)
            buf = body.buf
            # Marker of each frame whose region starts in buf; region 0 starts at offset 0.
            marks = [find_marker(0) if variable else 0]
            if marks[0] < 0 and not body.eof:
                body.fill(len(body.buf) * 2)
                continue
            pos = marks[0] + 1 if marks[0] >= 0 else len(buf)
            while True:
                m = find_marker(pos)
                if m < 0:
                    break
                marks.append(m)
                pos = m + 1
            if variable:
                regions = [0] + [line_start_back(m, hdr.n_header) for m in marks[1:]]
            else:
                regions = marks
            complete = len(regions) - 1
            if complete == 0 and not body.eof:
                body.fill(len(body.buf) * 2)  # one frame larger than the chunk
                continue

            nfr = complete + (1 if body.eof else 0)
            spans = []  # (frame number, coord start, coord end in buf, line of the first coord)
            heads = []  # (region start, marker start, first line) of each frame, variable cell
            for k in range(nfr):
                r = regions[k]
                fno = T_sub + k + 1
                rline = line0 + k * L
                if k < complete:
                    e = regions[k + 1]
                    nl = buf.count(b"\n", r, e)
                    if nl != L:
                        _frame_length_error(src, buf, r, e, nl, P, N, rline, fno, word)
                else:
                    e, keep, note = _final_frame(buf, r, P, N, ncols, variable, src, rline, fno, word)
                    if note:
                        last_frame_note = note
                    if not keep:
                        break
                mk = marks[k]
                if variable:
                    heads.append((r, mk, rline))
                spans.append((fno, buf.find(b"\n", mk) + 1, e, rline + P))
            if spans:
                mv = memoryview(buf)
                text = b"".join(mv[a:b] for _, a, b, _ in spans)
                del mv
                if not text.endswith(b"\n"):
                    text += b"\n"
                # Offsets of each frame's coordinates inside ``text``, for error messages.
                blocks, off = [], 0
                for fno, a, b, line in spans:
                    blocks.append((fno, off, off + (b - a), line))
                    off += b - a
                check_atom_frames(src, N, T_sub + len(blocks))  # before parsing what is past the limit
                while len(pending) >= n_workers:
                    store(pending.popleft())
                frame_cells = _frame_cells(buf, heads, src, head_ref, hdr.n_header) if variable else None
                pending.append((pool.submit(_parse_checked, text, ncols, len(blocks) * N), text, blocks, frame_cells))
                T_sub += len(blocks)
                del text
            if body.eof:
                break
            line0 += complete * L
            body.buf = buf[regions[-1] :]
            del buf
        while pending:
            store(pending.popleft())

    if last_frame_note:
        warnings.append(last_frame_note)
    T = sink.T
    if getattr(stream, "truncated", False):
        warnings.append(f"the {stream.kind} stream ends early (truncated file); read the {T} complete frames")
    if T == 0:
        raise InputError(f"{src}: no complete frame ({last_frame_note or 'no coordinates after the header'})")
    return sink.finish(warnings)


def _guess_atoms(buf: bytes) -> int:
    """Atom count from the header, for sizing the first read (0 if unreadable)."""
    lines = buf.split(b"\n", 8)
    for ln in lines[5:7]:
        toks = ln.split()
        if toks and all(t.isdigit() for t in toks):
            return min(sum(int(t) for t in toks), MAX_ATOMS)
    return 0


def _frame_length_error(src, buf, r, e, nl, P, N, rline, fno, word) -> None:
    coords = nl - P
    if coords < N:
        raise InputError(
            f"{src} line {rline + nl}: frame {fno} ends after {max(coords, 0)} of {N} atom lines "
            f"(the next {_dec(word)!r} line comes early)"
        )
    # Too many lines: show the first one past the N atoms.
    lines = buf[r:e].split(b"\n")
    extra = _dec(lines[P + N]) if len(lines) > P + N else ""
    raise InputError(
        f"{src} line {rline + P + N}: frame {fno} has {coords} lines for {N} atoms; "
        f"unexpected line {_short(extra)!r}"
    )


def _final_frame(buf, r, P, N, ncols, variable, src, rline, fno, word):
    """End offset of the last frame at end of file, whether to keep it, and a note."""
    end = len(buf)
    while end > r and buf[end - 1] in _WS:
        end -= 1
    ends_with_newline = buf.endswith(b"\n")
    nl = buf.count(b"\n", r, end) + 1  # the last line has no newline after stripping
    coords = nl - P
    last_start = buf.rfind(b"\n", r, end) + 1
    if not ends_with_newline and coords >= 1 and coords <= N:
        # A file cut inside a line: the last line counts only if it is whole.
        toks = buf[last_start:end].split()
        if len(toks) < 3 or (ncols == 4 and len(toks) < 4):
            coords -= 1
            end = last_start
    if coords == N:
        return end, True, None
    if coords < N:
        return end, False, f"dropped incomplete last frame {fno} ({max(coords, 0)} of {N} atoms)"
    if variable and coords - N < P:
        # Cut inside the next frame's cell header: keep this frame, drop the header.
        e = r
        for _ in range(P + N):
            e = buf.find(b"\n", e) + 1
        return e, True, f"dropped an incomplete cell header at the end of the file (from line {rline + P + N})"
    lines = buf[r:end].split(b"\n")
    extra = lines[P + N].strip()
    if not variable and coords == N + 1 and extra and word.startswith(extra):
        # Cut inside the next frame's marker word: keep this frame.
        note = f"dropped incomplete last frame {fno + 1} (0 of {N} atoms)"
        return r + sum(len(x) + 1 for x in lines[: P + N]), True, note
    raise InputError(
        f"{src} line {rline + P + N}: frame {fno} has {coords} lines for {N} atoms; "
        f"unexpected line {_short(_dec(lines[P + N]))!r}"
    )


def _frame_cells(buf, heads, src, head_ref, n_header) -> tuple[np.ndarray, np.ndarray]:
    """Cells (Å) and unscaled lattice blocks of many frames of a variable-cell XDATCAR.

    All the frames' scale and lattice lines are converted in one go; if anything looks
    wrong, the frames are re-read one by one to name the bad line.
    """
    cells, lat = _frame_cells_unchecked(buf, heads, src, head_ref, n_header)
    bad = cell_problem(cells)
    if bad:
        rline = heads[bad[0]][2]
        raise InputError(f"{src} lines {rline + 1}-{rline + 4}: {bad[1]}")
    return cells, lat


def _frame_cells_unchecked(buf, heads, src, head_ref, n_header) -> tuple[np.ndarray, np.ndarray]:
    species_line, counts_line = head_ref
    toks, ok = [], True
    for r, mk, _ in heads:
        lines = buf[r:mk].split(b"\n")
        if (species_line is not None and lines[5].strip() != species_line) or lines[
            n_header - 1
        ].strip() != counts_line:
            ok = False
            break
        t = b" ".join(lines[1:5]).split()
        if len(t) != 10:  # one scale factor and nine lattice numbers
            ok = False
            break
        toks.extend(t)
    if ok:
        try:
            vals = np.array(list(map(float, toks))).reshape(len(heads), 10)
        except ValueError:
            ok = False
    if ok:
        scale, lat = vals[:, 0], vals[:, 1:].reshape(-1, 3, 3)
        det = np.linalg.det(lat)
        ok = bool(np.isfinite(vals).all() and np.all(scale != 0) and np.all(np.abs(det) > 1e-12))
    if not ok:
        out = [_frame_cell(buf, r, mk, src, rline, head_ref, n_header) for r, mk, rline in heads]
        return np.array([c for c, _ in out]), np.array([l for _, l in out])
    # A negative scale is the target volume in Å^3.
    s = np.where(scale < 0, (np.abs(scale) / np.abs(det)) ** (1.0 / 3.0), scale)
    return lat * s[:, None, None], lat


def _frame_cell(buf, r, mk, src, rline, head_ref, n_header) -> tuple[np.ndarray, np.ndarray]:
    """Cell (Å) and unscaled lattice block of one frame of a variable-cell XDATCAR."""
    lines = buf[r:mk].split(b"\n")
    text = [_dec(x) for x in lines[:n_header]]
    scale = _parse_scale(text[1], src, rline + 1)
    lat = _parse_lattice(text[2:5], src, rline + 2)
    species_line, counts_line = head_ref
    if species_line is not None and lines[5].strip() != species_line:
        raise InputError(
            f"{src} line {rline + 5}: the species changed from {_dec(species_line)!r} to {_short(text[5])!r}"
        )
    if lines[n_header - 1].strip() != counts_line:
        raise InputError(
            f"{src} line {rline + n_header - 1}: the atom counts changed from "
            f"{_dec(counts_line)!r} to {_short(text[n_header - 1])!r}"
        )
    return _scale_cell(scale, lat, src, rline), lat


# --------------------------------------------------------------------------- sniffing
def sniff_xdatcar(path: str | Path, species: list[str] | None = None) -> dict:
    """Header facts of an XDATCAR, reading only its first kilobytes.

    Returns
    -------
    dict
        ``species`` (one per atom type, file order), ``counts``, ``n_atoms``,
        ``cartesian``, ``cell_A`` (first cell, Å), ``title``.
    """
    path = Path(path)
    src = str(path)
    with open_decompressed(path) as stream:
        body = _Body(stream, src, 1 << 20)
        body.fill(1 << 16)
        if not body.buf.strip(_WS):
            raise InputError(f"{src}: the file is empty")
        _check_text(body.buf[:65536], src)
        if not body.eof:
            body.fill(min(len(body.buf) + 200 * 1024 + 100 * _guess_atoms(body.buf), 64 << 20))
        h = _parse_header(body.buf, src, path, species)
    return {
        "species": h.type_names,
        "counts": h.counts,
        "n_atoms": h.n_atoms,
        "cartesian": h.cartesian,
        "cell_A": h.cell,
        "title": h.title,
    }


# --------------------------------------------------------------------------- writer
def write_xdatcar(
    traj: Trajectory,
    path: str | Path,
    *,
    title: str | None = None,
    write_incar: bool = False,
) -> Path:
    """Write a trajectory as a VASP 5 ``Direct`` XDATCAR.

    Parameters
    ----------
    traj : Trajectory
    path : str or Path
        Output file; ``.gz``, ``.xz`` or ``.bz2`` compress it. A fixed cell is written
        once; a variable cell as a full header before every frame (as VASP does for
        ISIF >= 3).
    title : str, optional
        First line; default the composition (e.g. ``Li16 S8``).
    write_incar : bool
        Also write an ``INCAR`` beside it with POTIM = ``timestep_fs``, NBLOCK = 1 and
        TEBEG = ``temperature_K`` (when known), so the folder reads back complete.

    Returns
    -------
    Path
        The file written.

    Notes
    -----
    Coordinates are written with 8 decimals (VASP's own precision), the cell with 10,
    so a read-back agrees to 5e-9.
    """
    path = Path(path)
    species = list(traj.species)
    # Run-length blocks of species: VASP needs each type contiguous; repeats are allowed.
    names, counts = [], []
    for s in species:
        if names and names[-1] == s:
            counts[-1] += 1
        else:
            names.append(s)
            counts.append(1)
    if title is None:
        title = " ".join(f"{s}{c}" for s, c in traj.composition.items())
    title = title.replace("\n", " ")
    variable = traj.variable_cell
    N = traj.n_atoms
    frame_fmt = " %.8f %.8f %.8f\n" * N

    def header(cell) -> str:
        rows = "".join(" %.10f %.10f %.10f\n" % tuple(v) for v in cell)
        return f"{title}\n 1.0\n{rows} {' '.join(names)}\n {' '.join(map(str, counts))}\n"

    name = path.name.lower()
    if name.endswith(".gz"):
        opener = lambda: gzip.open(path, "wb", compresslevel=6)  # noqa: E731
    elif name.endswith(".xz"):
        opener = lambda: lzma.open(path, "wb", preset=3)  # noqa: E731
    elif name.endswith(".bz2"):
        opener = lambda: bz2.open(path, "wb")  # noqa: E731
    else:
        opener = lambda: open(path, "wb")  # noqa: E731
    pos = np.asarray(traj.positions_frac, dtype=float)
    with opener() as f:
        if not variable:
            f.write(header(traj.cells[0]).encode())
        parts = []
        for t in range(traj.n_frames):
            if variable:
                parts.append(header(traj.cells[t]))
            parts.append(f"Direct configuration= {t + 1:6d}\n")
            parts.append(frame_fmt % tuple(pos[t].ravel()))
            if len(parts) > 64:
                f.write("".join(parts).encode())
                parts = []
        f.write("".join(parts).encode())
    if write_incar:
        lines = ["IBRION = 0"]
        if traj.timestep_fs:
            lines += [f"POTIM = {traj.timestep_fs:.10g}", "NBLOCK = 1"]
        if traj.temperature_K:
            lines.append(f"TEBEG = {traj.temperature_K:.10g}")
        (path.parent / "INCAR").write_text("\n".join(lines) + "\n")
    return path
