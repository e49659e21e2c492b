"""Trajectories in formats ASE reads (extxyz, LAMMPS dump, vasprun.xml, ...).

ASE parses the frames; this module turns them into a :class:`Trajectory` with
fractional positions (one batched solve, not per atom), checks that every frame has a
periodic cell and the same atoms, and picks up the timestep where the format stores
it. Compressed files are decompressed to a temporary file first: ASE's readers seek,
and seeking backwards in an xz or gzip stream re-decompresses it from the start (a
20 MB ``.exyz.xz`` takes over 4 minutes that way, 4 s from a plain file).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.limits import check_atom_frames, check_regular, check_text_bytes
from iondiff_core.io.xdatcar import compression_of, open_decompressed, strip_compression_suffix
from iondiff_core.trajectory import Trajectory

#: ASE format of a file, by its name without any compression suffix.
_SUFFIX_FORMATS = {
    ".extxyz": "extxyz",
    ".exyz": "extxyz",
    ".xyz": "extxyz",
    ".lammpstrj": "lammps-dump-text",
    ".dump": "lammps-dump-text",
    ".traj": "traj",
    ".xdatcar": "vasp-xdatcar",
}


def guess_ase_format(path: str | Path) -> str | None:
    """ASE format name for a file from its name (compression suffix ignored), or None."""
    name = strip_compression_suffix(Path(path).name).lower()
    if name.endswith(".xml") and ("vasprun" in name or "vasp" in name):
        return "vasp-xml"
    for suf, fmt in _SUFFIX_FORMATS.items():
        if name.endswith(suf):
            return fmt
    if name.startswith("dump.") or ".dump." in name or "lammpstrj" in name:
        return "lammps-dump-text"
    return None


class _Plain:
    """A readable plain copy of a possibly compressed file (deleted on exit)."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp: str | None = None

    def __enter__(self) -> Path:
        if compression_of(self.path) is None:
            return self.path
        suffix = Path(strip_compression_suffix(self.path.name)).suffix
        fd, self.tmp = tempfile.mkstemp(prefix="iondiff_", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as out, open_decompressed(self.path) as stream:
                shutil.copyfileobj(stream, out, 16 << 20)
        except OSError as e:
            self.__exit__()
            raise InputError(f"{self.path}: cannot decompress to a temporary file ({e.strerror or e})") from None
        except BaseException:
            self.__exit__()
            raise
        return Path(self.tmp)

    def __exit__(self, *exc) -> None:
        if self.tmp:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _lammps_has_elements(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("latin-1")
    m = re.search(r"ITEM:\s*ATOMS\s+([^\n]*)", head)
    return bool(m and "element" in m.group(1).split())


def _vasprun_params(path: Path) -> dict[str, float]:
    """POTIM and TEBEG from a vasprun.xml's parameter block (first MBs only)."""
    with open(path, "rb") as f:
        head = f.read(8 << 20).decode("latin-1")
    out = {}
    for tag in ("POTIM", "TEBEG", "NBLOCK"):
        m = re.search(rf'<i\s+(?:type="\w+"\s+)?name="{tag}"\s*>\s*([^<\s]+)\s*</i>', head)
        if m:
            try:
                out[tag] = float(m.group(1))
            except ValueError:
                pass
    return out


def read_ase(
    path: str | Path,
    format: str | None = None,
    species: list[str] | None = None,
) -> Trajectory:
    """Read any trajectory ASE can read, as fractional positions and cells.

    Parameters
    ----------
    path : str or Path
        The file (may be .gz/.xz/.bz2 compressed).
    format : str, optional
        ASE format name; guessed from the file name, else by ASE from the content.
    species : list of str, optional
        For LAMMPS dumps without an ``element`` column: the species of atom types
        1, 2, ... (ASE otherwise reads type t as the element with atomic number t).

    Returns
    -------
    Trajectory
        ``timestep_fs`` from the file when it stores one (extxyz ``dt``/``timestep``
        or evenly spaced ``time`` in the frames' info, assumed fs; vasprun.xml POTIM,
        as vasprun.xml stores every ionic step), else None; ``temperature_K`` from a
        vasprun.xml TEBEG, else None.

    Raises
    ------
    InputError
        If ASE cannot read the file, a frame has no periodic cell, or the atoms change
        between frames. A truncated last frame is dropped with a warning.
    """
    try:
        import ase.io
        from ase.io.formats import filetype, ioformats
    except ImportError:  # pragma: no cover - ase is a dependency
        raise InputError(f"{path}: reading this format needs the 'ase' package") from None
    path = Path(path)
    src = str(path)
    check_regular(path)
    fmt = format or guess_ase_format(path)
    warnings: list[str] = []
    with _Plain(path) as plain:
        if plain.stat().st_size == 0:
            raise InputError(f"{src}: the file is empty")
        check_text_bytes(src, plain.stat().st_size)  # compressed: counted while decompressing
        if fmt is None:
            try:
                fmt = filetype(str(plain), guess=False)
            except Exception as e:
                raise InputError(f"{src}: unknown trajectory format ({_one_line(e)}); give format=") from None
        if fmt not in ioformats or not ioformats[fmt].can_read:
            raise InputError(f"{src}: ASE cannot read format {fmt!r}")
        lammps_types = fmt == "lammps-dump-text" and not _lammps_has_elements(plain)
        if lammps_types:
            if species is None:
                warnings.append(
                    "LAMMPS dump without an element column: atom type t is read as the element "
                    "with atomic number t; give species=[...] to name the types"
                )
        extra = _vasprun_params(plain) if fmt == "vasp-xml" else {}
        size = plain.stat().st_size
        isbinary = ioformats[fmt].isbinary
        pos_list, cell_list, infos = [], [], []
        numbers0 = symbols0 = None
        with open(plain, "rb" if isbinary else "r") as fd:
            it = ase.io.iread(fd, index=":", format=fmt)
            while True:
                try:
                    atoms = next(it)
                except StopIteration:
                    break
                except Exception as e:
                    # At the very end of the file: a truncated last frame. Elsewhere: an error.
                    k = len(pos_list)
                    tell = (fd.buffer if hasattr(fd, "buffer") else fd).tell()
                    per_frame = size / max(k, 1)
                    if k and size - tell < per_frame:
                        warnings.append(f"dropped incomplete last frame {k + 1} ({_one_line(e)})")
                        break
                    raise InputError(f"{src}: cannot read frame {k + 1} as {fmt} ({_one_line(e)})") from None
                k = len(pos_list) + 1
                check_atom_frames(src, len(atoms), k)
                if numbers0 is None:
                    numbers0 = atoms.numbers.copy()
                    symbols0 = atoms.get_chemical_symbols()
                elif len(atoms) != len(numbers0) or not np.array_equal(atoms.numbers, numbers0):
                    raise InputError(
                        f"{src}: frame {k} has {len(atoms)} atoms ({atoms.get_chemical_formula()}), "
                        f"frame 1 had {len(numbers0)} ({Trajectory.__name__} needs the same atoms in every frame)"
                    )
                cell = np.array(atoms.cell.array, dtype=float)
                if not atoms.pbc.all() or abs(np.linalg.det(cell)) < 1e-9:
                    raise InputError(
                        f"{src}: frame {k} has no periodic 3D cell (pbc={atoms.pbc.tolist()}); "
                        "hops are defined in a periodic box"
                    )
                pos_list.append(atoms.positions)
                cell_list.append(cell)
                infos.append(atoms.info)
    if not pos_list:
        raise InputError(f"{src}: no frame could be read")
    pos = np.stack(pos_list)
    del pos_list
    cells = np.stack(cell_list)
    fixed = bool(np.all(cells == cells[0]))
    inv = np.linalg.inv(cells[0] if fixed else cells)
    frac = pos @ inv  # (T,N,3) @ (3,3) or (T,3,3): one batched product
    del pos
    if not np.isfinite(frac).all():
        raise InputError(f"{src}: non-finite positions")
    species_out = list(symbols0)
    if species is not None and lammps_types:
        types = numbers0
        if types.max() > len(species):
            raise InputError(f"{src}: atom types go up to {types.max()} but species= names {len(species)}")
        species_out = [str(species[t - 1]) for t in types]
    timestep = _timestep_from_info(infos, warnings)
    temperature = None
    if fmt == "vasp-xml":
        if "POTIM" in extra:
            timestep = extra["POTIM"]
        if extra.get("TEBEG", 0) > 0:
            temperature = extra["TEBEG"]
    return Trajectory(
        positions_frac=frac,
        cells=cells[0] if fixed else cells,
        species=species_out,
        timestep_fs=timestep,
        temperature_K=temperature,
        source=src,
        warnings=warnings,
    )


def _timestep_from_info(infos: list[dict], warnings: list[str]) -> float | None:
    """Frame spacing in fs from extxyz-style info keys (assumed to be in fs)."""
    first = infos[0]
    for key in ("dt", "timestep", "time_step", "dt_fs"):
        if key in first:
            try:
                dt = float(first[key])
            except (TypeError, ValueError):
                continue
            if dt > 0:
                warnings.append(f"timestep {dt:g} read from the frames' {key!r} (assumed fs)")
                return dt
    if len(infos) > 1 and all("time" in i for i in infos):
        try:
            t = np.array([float(i["time"]) for i in infos])
        except (TypeError, ValueError):
            return None
        d = np.diff(t)
        if d.size and d[0] > 0 and np.allclose(d, d[0], rtol=1e-6):
            warnings.append(f"timestep {d[0]:g} from the frames' 'time' (assumed fs)")
            return float(d[0])
    return None


def sniff_ase_species(path: str | Path, format: str | None = None) -> list[str]:
    """Species of a non-VASP trajectory from its first frame only (fast on big files)."""
    path = Path(path)
    src = str(path)
    fmt = format or guess_ase_format(path)
    with open_decompressed(path) as stream:
        head = b""
        while len(head) < (4 << 20):
            piece = stream.read(1 << 20)
            if not piece:
                break
            head += piece
    text = head.decode("latin-1")
    if fmt == "extxyz":
        lines = text.split("\n", 2)
        try:
            n = int(lines[0].split()[0])
        except (ValueError, IndexError):
            raise InputError(f"{src} line 1: expected the number of atoms, got {lines[0][:60]!r}") from None
        m = re.search(r"Properties=(\S+)", lines[1]) if len(lines) > 1 else None
        col = 0
        if m:
            parts = m.group(1).split(":")
            for name, _kind, width in zip(parts[0::3], parts[1::3], parts[2::3]):
                if name == "species":
                    break
                col += int(width)
        body = lines[2].split("\n", n)[:n] if len(lines) > 2 else []
        if len(body) < n:
            # A first frame bigger than the sniffed head: fall back to a full read.
            return read_ase(path, fmt).symbols
        return list(dict.fromkeys(ln.split()[col] for ln in body))
    if fmt == "vasp-xml":
        m = re.search(r'<array name="atoms"\s*>(.*?)</array>', text, re.S)
        if m:
            return list(dict.fromkeys(re.findall(r"<rc>\s*<c>\s*([A-Za-z]+)\s*</c>", m.group(1))))
    if fmt == "lammps-dump-text":
        m = re.search(r"ITEM:\s*NUMBER OF ATOMS\s*\n\s*(\d+)", text)
        h = re.search(r"ITEM:\s*ATOMS\s+([^\n]*)\n", text)
        if m and h:
            cols = h.group(1).split()
            n = int(m.group(1))
            key = "element" if "element" in cols else "type"
            if key in cols:
                rows = text[h.end() :].split("\n", n)[:n]
                if len(rows) == n:
                    j = cols.index(key)
                    vals = list(dict.fromkeys(r.split()[j] for r in rows))
                    if key == "type":
                        from ase.data import chemical_symbols

                        vals = [chemical_symbols[int(v)] for v in sorted(vals, key=int)]
                    return vals
    return read_ase(path, fmt).symbols
