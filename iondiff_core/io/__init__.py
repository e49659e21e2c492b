"""Reading trajectories from disk (METHOD.md section 0).

Entry points:

* :func:`read_trajectory` - a folder (VASP run: XDATCAR plus INCAR) or a trajectory
  file in any supported format -> :class:`~iondiff_core.trajectory.Trajectory`.
* :func:`find_simulations` - every run under a folder.
* :func:`sniff_species` - the species of a trajectory from its header only.
* :func:`read_incar`, :func:`write_xdatcar`.

Streaming readers, each yielding the same :class:`Trajectory` (cells per frame for
NPT runs): VASP XDATCAR (:mod:`.xdatcar`), LAMMPS text dumps (:mod:`.lammps`), extxyz
(:mod:`.extxyz`), VASP vasprun.xml (:mod:`.vasprun`), H5MD (:mod:`.h5md`) and ASE
``.traj`` (:mod:`.ase_traj`); any other format ASE reads goes through ASE
(:mod:`.ase_formats`). Every reader can keep only the mobile species, in float32
(``keep='mobile', dtype=np.float32``), so the framework and float64 copies are never
held.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.io.ase_formats import guess_ase_format, read_ase, sniff_ase_species
from iondiff_core.io.ase_traj import read_ase_traj, sniff_ase_traj
from iondiff_core.io.extxyz import read_extxyz, sniff_extxyz
from iondiff_core.io.frames import FrameSink, choose_kept, parse_type_map
from iondiff_core.io.h5md import read_h5md, sniff_h5md
from iondiff_core.io.incar import read_incar
from iondiff_core.io.limits import ReadLimits, applied, check_regular
from iondiff_core.io.lammps import read_lammps_dump, sniff_lammps
from iondiff_core.io.vasprun import read_vasprun, sniff_vasprun
from iondiff_core.io.xdatcar import (
    open_decompressed,
    read_xdatcar,
    sniff_xdatcar,
    strip_compression_suffix,
    write_xdatcar,
)
from iondiff_core.trajectory import TEMPERATURE_RANGE_K, TIMESTEP_RANGE_FS, Trajectory

__all__ = [
    "ReadLimits",
    "find_simulations",
    "locate_trajectory",
    "open_decompressed",
    "plausible_temperature_K",
    "plausible_timestep_fs",
    "read_ase",
    "read_ase_traj",
    "read_extxyz",
    "read_h5md",
    "read_incar",
    "read_lammps_dump",
    "read_trajectory",
    "read_vasprun",
    "read_xdatcar",
    "sniff_species",
    "write_xdatcar",
]

_XDATCAR_FORMATS = ("xdatcar", "vasp-xdatcar", "vasp")
#: File name endings recognised as non-VASP trajectories by find_simulations.
_OTHER_SUFFIXES = (".extxyz", ".exyz", ".lammpstrj", ".dump", ".h5md", ".traj")


def _is_xdatcar_name(name: str) -> bool:
    base = strip_compression_suffix(name).upper()
    return base.startswith("XDATCAR") or base.endswith(".XDATCAR")


def _is_vasprun_name(name: str) -> bool:
    base = strip_compression_suffix(name).lower()
    return base.startswith("vasprun") and base.endswith(".xml")


def _is_other_name(name: str) -> bool:
    base = strip_compression_suffix(name).lower()
    return base.endswith(_OTHER_SUFFIXES) or base.startswith("dump.")


def _looks_like_xdatcar(path: Path) -> bool:
    """Content check for files with unusual names: a POSCAR-like header then a marker."""
    try:
        with open_decompressed(path) as f:
            head = f.read(8192)
    except InputError:
        return False
    lines = head.split(b"\n", 9)[:9]
    for idx in (6, 7):
        if len(lines) > idx and lines[idx].strip()[:1] in (b"D", b"d", b"C", b"c"):
            return b"configuration" in lines[idx].lower() or lines[idx].strip().lower() in (
                b"direct",
                b"cartesian",
            )
    return False


def _candidates(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.stat().st_size > 0)
    xd = [p for p in files if _is_xdatcar_name(p.name)]
    vr = [p for p in files if _is_vasprun_name(p.name)]
    other = [p for p in files if _is_other_name(p.name)]
    return xd, vr, other


def locate_trajectory(folder: str | Path) -> Path:
    """The trajectory file of a run folder: its XDATCAR, else vasprun.xml, else the one
    extxyz/LAMMPS file.

    Raises
    ------
    InputError
        If the folder holds none, or several candidates of the same kind (say which).
    """
    folder = Path(folder)
    xd, vr, other = _candidates(folder)
    for group in (xd, vr, other):
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            exact = [p for p in group if strip_compression_suffix(p.name) in ("XDATCAR", "vasprun.xml")]
            if len(exact) == 1:
                return exact[0]
            names = ", ".join(p.name for p in group)
            raise InputError(f"{folder}: holds several trajectories ({names}); give one file")
    raise InputError(
        f"{folder}: no trajectory found (XDATCAR, vasprun.xml, *.extxyz, *.exyz, *.lammpstrj, *.dump)"
    )


def _plausible(value, name: str, unit: str, bounds: tuple[float, float], exclusive: bool) -> float:
    """An explicit timestep or temperature as a float, refused outside its plausible range."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in {unit}, got {value!r}") from None
    lo, hi = bounds
    ok = math.isfinite(x) and ((lo < x < hi) if exclusive else (lo <= x <= hi))
    if not ok:
        raise InputError(f"{name} must be between {lo:g} and {hi:g} {unit}, got {value!r}")
    return x


def plausible_timestep_fs(value) -> float:
    """An explicit time between frames (fs) as a float; InputError outside 0.01-1e5 fs."""
    return _plausible(value, "timestep_fs", "fs", TIMESTEP_RANGE_FS, exclusive=False)


def plausible_temperature_K(value) -> float:
    """An explicit temperature (K) as a float; InputError outside (0, 1e5) K."""
    return _plausible(value, "temperature_K", "K", TEMPERATURE_RANGE_K, exclusive=True)


def _file_value_checked(traj: Trajectory, attr: str, what: str, unit: str, bounds, exclusive: bool) -> None:
    """A timestep or temperature the file itself stores: dropped with a warning when implausible."""
    x = getattr(traj, attr)
    if x is None:
        return
    lo, hi = bounds
    if not (math.isfinite(x) and ((lo < x < hi) if exclusive else (lo <= x <= hi))):
        traj.warnings.append(
            f"{Path(traj.source).name} stores a {what} of {x:.3g} {unit}, not plausible ({lo:g} to {hi:g} {unit}); "
            f"ignored: give {attr}"
        )
        setattr(traj, attr, None)


def _guess_format(file: Path) -> str | None:
    """Format of a trajectory file from its name, else from its first bytes."""
    base = strip_compression_suffix(file.name).lower()
    if _is_xdatcar_name(file.name):
        return "xdatcar"
    if base.endswith((".h5md", ".h5", ".hdf5")):
        return "h5md"
    fmt = guess_ase_format(file)
    if fmt is not None:
        return fmt
    try:
        with open_decompressed(file) as f:
            head = f.read(4096)
    except InputError:
        return None
    if head.startswith(b"\x89HDF"):
        return "h5md"
    text = head.lstrip()
    if text.startswith(b"ITEM: TIMESTEP"):
        return "lammps-dump-text"
    if text.startswith(b"<?xml") and b"<modeling" in head:
        return "vasp-xml"
    if b"Lattice=" in head.split(b"\n", 2)[1:2][0] if head.count(b"\n") >= 2 else False:
        return "extxyz"
    if _looks_like_xdatcar(file):
        return "xdatcar"
    return None


#: Formats with a streaming reader here: name -> reader(path, type_map, keep=, mobile=, dtype=).
_FAST = {
    "lammps-dump-text": read_lammps_dump,
    "lammps": read_lammps_dump,
    "extxyz": read_extxyz,
    "vasp-xml": lambda p, tm, **kw: read_vasprun(p, type_map=tm, **kw),
    "vasprun": lambda p, tm, **kw: read_vasprun(p, type_map=tm, **kw),
    "h5md": read_h5md,
    "traj": read_ase_traj,
}


def _select(traj: Trajectory, keep: str, mobile: str | None, dtype) -> Trajectory:
    """The kept atoms of a trajectory read whole (the ASE fallback), in ``dtype``."""
    if keep == "all" and np.dtype(dtype) == traj.positions_frac.dtype:
        return traj
    sink = FrameSink(traj.species, traj.source, keep, mobile, dtype, traj.n_frames, traj.unwrapped)
    sink.add(traj.positions_frac, traj.cells)
    return sink.finish(traj.warnings, traj.timestep_fs, traj.temperature_K)


#: Every reader words a compressed stream that ends early with this phrase.
TRUNCATED_STREAM = "stream ends early (truncated file)"


def read_trajectory(
    path: str | Path,
    timestep_fs: float | None = None,
    temperature_K: float | None = None,
    format: str | None = None,
    *,
    species: list[str] | None = None,
    type_map=None,
    keep: str = "all",
    mobile: str | None = None,
    dtype=np.float64,
    allow_truncated: bool = False,
    limits: ReadLimits | None = None,
) -> Trajectory:
    """Read an MD trajectory.

    Parameters
    ----------
    path : str or Path
        A run folder (holding an XDATCAR, plain or ``.gz``/``.xz``/``.bz2``, also named
        like ``XDATCAR_600K``, and optionally an INCAR; or a vasprun.xml or one
        extxyz/LAMMPS/H5MD/.traj file), or a trajectory file.
    timestep_fs : float, optional
        Time between stored frames in fs; overrides the INCAR's POTIM x NBLOCK.
    temperature_K : float, optional
        Temperature in K; overrides the INCAR's TEBEG.
    format : str, optional
        ``'xdatcar'``, ``'lammps-dump-text'``, ``'extxyz'``, ``'vasp-xml'``, ``'h5md'``,
        ``'traj'`` or any other ASE format name; by default from the file name and content.
    species : list of str, optional
        Species per atom type, for VASP 4 XDATCARs without a species line (or LAMMPS
        dumps without an element column: the species of types 1, 2, ...).
    type_map : str or dict, optional
        Species of numeric atom types, ``'1=Li,2=P,3=S'`` or ``{1: 'Li', ...}`` (LAMMPS
        dumps, H5MD; renames labels in other formats).
    keep : {'all', 'mobile'}
        Hold every atom, or only the atoms of the ``mobile`` species: the readers then
        never hold the framework (its mean drift is kept, for drift removal).
    mobile : str, optional
        The mobile species for ``keep='mobile'`` (default: the first of Li, Na, K, Ag,
        Cu, F, Cl, Br, I, O, H in the file).
    dtype : numpy dtype
        Storage type of the positions; ``np.float32`` halves the memory.
    allow_truncated : bool
        Analyse the complete frames of a compressed file that ends early.
    limits : ReadLimits, optional
        Caps on the decompressed text and on atoms x frames: the read stops with an
        InputError as soon as one is passed (a plain file over ``max_text_bytes`` is
        refused before reading).

    Returns
    -------
    Trajectory
        With ``timestep_fs``/``temperature_K`` None (and a warning) when neither given
        nor found; callers that need time raise then.

    Raises
    ------
    InputError
        For a missing path, an unreadable or malformed file (message with the line), and
        for a compressed stream that ends early (a damaged file) unless ``allow_truncated``,
        which keeps its complete frames and says so in the warnings. (A plain text file
        cut inside its last frame keeps its complete frames with a warning.) For a
        path that is not a regular file or folder (a FIFO, a device, a socket), and when
        a limit is passed.
    """
    with applied(limits):
        return _read_trajectory(path, timestep_fs, temperature_K, format, species, type_map, keep, mobile, dtype,
                                allow_truncated)


def _read_trajectory(path, timestep_fs, temperature_K, format, species, type_map, keep, mobile, dtype,
                     allow_truncated) -> Trajectory:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if timestep_fs is not None:
        timestep_fs = plausible_timestep_fs(timestep_fs)
    if temperature_K is not None:
        temperature_K = plausible_temperature_K(temperature_K)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype}")
    file = locate_trajectory(path) if path.is_dir() else path
    check_regular(file)
    fmt = (format or "").lower() or None
    if fmt is None:
        fmt = _guess_format(file)
    tmap = parse_type_map(type_map)
    opts = {"keep": keep, "mobile": mobile, "dtype": dtype}
    if fmt in _XDATCAR_FORMATS:
        traj = read_xdatcar(file, species=species, **opts)
    elif fmt in _FAST:
        if tmap is None and species is not None:
            tmap = parse_type_map(list(species))
        traj = _FAST[fmt](file, tmap, **opts)
    else:
        traj = _select(read_ase(file, format=fmt, species=species), **opts)
    damaged = [w for w in traj.warnings if TRUNCATED_STREAM in w]
    if damaged and not allow_truncated:
        raise InputError(
            f"{file}: {damaged[0]}: the file is damaged (cut short while copying?). Copy it again, or analyse "
            "its complete frames on purpose (allow_truncated=True; --allow-truncated on the command line)"
        )
    if damaged:
        traj.warnings.append(f"DAMAGED FILE: {damaged[0]}; only the complete frames were analysed")

    if timestep_fs is None:
        _file_value_checked(traj, "timestep_fs", "time between frames", "fs", TIMESTEP_RANGE_FS, exclusive=False)
    if temperature_K is None:
        _file_value_checked(traj, "temperature_K", "temperature", "K", TEMPERATURE_RANGE_K, exclusive=True)
    # The INCAR beside the file gives what the trajectory itself does not store.
    need_time = timestep_fs is None and traj.timestep_fs is None
    need_temp = temperature_K is None and traj.temperature_K is None
    incar = file.parent / "INCAR"
    if fmt in _XDATCAR_FORMATS and (need_time or need_temp):
        if incar.is_file():
            info = read_incar(incar)
            for w in info["warnings"]:
                about_time = any(k in w for k in ("POTIM", "NBLOCK", "IBRION", "time between"))
                about_temp = any(k in w for k in ("TEBEG", "TEEND", "temperature"))
                if (about_time and need_time) or (about_temp and need_temp) or not (about_time or about_temp):
                    traj.warnings.append(w)
            if need_time:
                traj.timestep_fs = info["timestep_fs"]
            if need_temp:
                traj.temperature_K = info["temperature_K"]
        elif need_time:
            traj.warnings.append(
                f"no INCAR beside {file.name}: the time between frames is unknown; give timestep_fs"
            )
    elif need_time and traj.timestep_fs is None:
        traj.warnings.append(f"{file.name} stores no timestep: the time between frames is unknown; give timestep_fs")
    if timestep_fs is not None:
        traj.timestep_fs = timestep_fs
    if temperature_K is not None:
        traj.temperature_K = temperature_K
    return traj


def sniff_species(
    path: str | Path, format: str | None = None, *, species: list[str] | None = None, type_map=None
) -> list[str]:
    """Distinct species of a trajectory, in file order, from its header only.

    Reads the first kilobytes (decompressing only those), so it takes milliseconds on a
    400 MB XDATCAR.gz. Same ``path``/``format`` conventions as :func:`read_trajectory`;
    use it to choose the mobile species before ``read_trajectory(keep='mobile')``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    file = locate_trajectory(path) if path.is_dir() else path
    check_regular(file)
    fmt = (format or "").lower() or None
    if fmt is None:
        fmt = _guess_format(file)
    if fmt in _XDATCAR_FORMATS:
        return list(dict.fromkeys(sniff_xdatcar(file, species=species)["species"]))
    tmap = parse_type_map(type_map)
    if tmap is None and species is not None:
        tmap = parse_type_map(list(species))
    sniffers = {
        "lammps-dump-text": sniff_lammps,
        "lammps": sniff_lammps,
        "extxyz": sniff_extxyz,
        "h5md": sniff_h5md,
        "traj": sniff_ase_traj,
        "vasp-xml": lambda p, tm: sniff_vasprun(p),
        "vasprun": lambda p, tm: sniff_vasprun(p),
    }
    if fmt in sniffers:
        return list(dict.fromkeys(sniffers[fmt](file, tmap)["species"]))
    return sniff_ase_species(file, fmt)


def find_simulations(root: str | Path, check: bool = False) -> list[Path]:
    """Every run under ``root``, sorted.

    A folder whose trajectory is a single XDATCAR (or, without one, a single
    vasprun.xml) is listed as the folder, since its INCAR belongs with it; other
    trajectories (``*.extxyz``, ``*.exyz``, ``*.lammpstrj``, ``*.dump``, each possibly
    ``.gz``/``.xz``/``.bz2``) and folders with several XDATCARs are listed file by file.
    Hidden folders and empty files are skipped.

    Parameters
    ----------
    root : str or Path
        Folder to search (recursively), or a single file.
    check : bool
        Also read each candidate's header and leave out those that fail.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    if root.is_file():
        name = root.name
        ok = _is_xdatcar_name(name) or _is_vasprun_name(name) or _is_other_name(name)
        return [root] if ok else []
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        try:
            xd, vr, other = _candidates(folder)
        except OSError:
            continue
        vasp = xd or vr  # an XDATCAR and a vasprun.xml side by side are one run
        if len(vasp) == 1:
            found.append(folder)
        else:
            found.extend(vasp)
        found.extend(other)
    if check:
        kept = []
        for p in found:
            try:
                sniff_species(p)
            except InputError:
                continue
            kept.append(p)
        found = kept
    return sorted(found)
