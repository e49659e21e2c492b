"""Streaming reader of VASP vasprun.xml (molecular dynamics runs).

The XML is parsed incrementally (``xml.etree.ElementTree.iterparse``) and every ionic
step (``<calculation>``) is dropped from the tree as soon as its cell (``basis``) and
``positions`` are taken, so memory holds only the stored positions. POTIM, NBLOCK and
TEBEG come from the ``<incar>`` block, else from ``<parameters>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from iondiff_core.errors import InputError
from iondiff_core.trajectory import cell_problem
from iondiff_core.io.frames import FrameSink, map_types, parse_type_map
from iondiff_core.io.xdatcar import clean_species_label, open_decompressed

_PARAMS = ("POTIM", "NBLOCK", "TEBEG", "IBRION")
_BLOCK_BYTES = 1 << 20  # all-atom positions handed to the sink at once (small: the steps are parsed one by one anyway)


def _vectors(varray, n_rows: int | None, what: str, src: str, step: int) -> np.ndarray:
    try:
        vals = np.array(" ".join(v.text or "" for v in varray.iter("v")).split(), dtype=np.float64)
    except ValueError:
        raise InputError(f"{src}: ionic step {step}: the {what} hold a value that is not a number") from None
    rows = vals.size // 3
    if vals.size % 3 or (n_rows is not None and rows != n_rows):
        raise InputError(f"{src}: ionic step {step}: {rows} {what} vectors, expected {n_rows}")
    return vals.reshape(rows, 3)


def _species(atominfo, src: str) -> list[str]:
    for arr in atominfo.iter("array"):
        if arr.get("name") == "atoms":
            out = [clean_species_label((rc.find("c").text or "").strip()) for rc in arr.iter("rc")]
            if out:
                return out
    raise InputError(f"{src}: <atominfo> lists no atoms")


def sniff_vasprun(path: str | Path) -> dict:
    """Species of every atom (from ``<atominfo>``), reading only up to it."""
    src = str(path)
    with open_decompressed(path) as stream:
        try:
            for _, elem in ET.iterparse(stream, events=("end",)):
                if elem.tag == "atominfo":
                    sp = _species(elem, src)
                    return {"species": sp, "n_atoms": len(sp)}
        except ET.ParseError as e:
            raise InputError(f"{src}: not a readable vasprun.xml ({e})") from None
    raise InputError(f"{src}: no <atominfo> (not a vasprun.xml?)")


def read_vasprun(path: str | Path, *, type_map=None, keep: str = "all", mobile: str | None = None, dtype=np.float64):
    """Read the ionic steps of a VASP vasprun.xml (plain or compressed).

    Parameters
    ----------
    path : str or Path
    type_map : optional
        Rename species labels.
    keep, mobile, dtype
        As in :func:`iondiff_core.io.read_trajectory`.

    Returns
    -------
    Trajectory
        One frame per ``<calculation>``, the cell of each step (NPT), ``timestep_fs`` =
        POTIM (vasprun.xml stores every ionic step, whatever NBLOCK), ``temperature_K``
        = TEBEG.

    Raises
    ------
    InputError
        A file cut inside an ionic step (naming the step), malformed XML or numbers, no
        ionic step, an atom count that changes. A file cut between two steps keeps the
        steps with a warning.
    """
    src = str(path)
    tmap = parse_type_map(type_map)
    warnings: list[str] = []
    params: dict[str, float] = {}
    species = None
    sink = None
    steps_done = 0
    block_pos: list[np.ndarray] = []
    block_cell: list[np.ndarray] = []
    stack: list[str] = []
    basis = positions = None
    root = None

    def flush():
        if block_pos:
            sink.add(np.stack(block_pos), np.stack(block_cell))
            block_pos.clear()
            block_cell.clear()

    with open_decompressed(path) as stream:
        try:
            for event, elem in ET.iterparse(stream, events=("start", "end")):
                tag = elem.tag
                if event == "start":
                    if root is None:
                        root = elem
                        if tag != "modeling":
                            raise InputError(f"{src}: not a vasprun.xml (root element <{tag}>)")
                    stack.append(tag)
                    if tag == "calculation":
                        basis = positions = None
                    continue
                stack.pop()
                if tag == "i" and elem.get("name") in _PARAMS and stack and stack[-1] in ("incar", "separator", "parameters"):
                    name = elem.get("name")
                    in_incar = "incar" in stack
                    if in_incar or name not in params:
                        try:
                            params[name] = float((elem.text or "").split()[0])
                        except (ValueError, IndexError):
                            warnings.append(f"{name} = {(elem.text or '').strip()!r} in vasprun.xml is not a number; ignored")
                elif tag == "atominfo":
                    species = map_types(_species(elem, src), tmap, src, "species label") if tmap else _species(elem, src)
                    elem.clear()
                elif tag == "varray" and "calculation" in stack and "structure" in stack:
                    name = elem.get("name")
                    step = steps_done + 1
                    if name == "basis":
                        basis = _vectors(elem, 3, "basis", src, step)
                    elif name == "positions":
                        positions = _vectors(elem, len(species) if species else None, "positions", src, step)
                elif tag == "calculation":
                    step = steps_done + 1
                    if species is None:
                        raise InputError(f"{src}: ionic step {step} comes before <atominfo>")
                    if positions is None or basis is None:
                        raise InputError(f"{src}: ionic step {step} has no structure (basis and positions)")
                    bad = cell_problem(basis)
                    if bad:
                        raise InputError(f"{src}: ionic step {step}: {bad[1]}")
                    if sink is None:
                        sink = FrameSink(species, src, keep, mobile, dtype, capacity=1024)
                    block_pos.append(positions)
                    block_cell.append(basis)
                    steps_done += 1
                    if len(block_pos) * positions.nbytes >= _BLOCK_BYTES:
                        flush()
                    elem.clear()
                    root.clear()  # drop the finished steps from the tree
        except ET.ParseError as e:
            line = e.position[0] if getattr(e, "position", None) else "?"
            at_end = str(e).startswith(("no element found", "unclosed token"))
            if "calculation" in stack:
                raise InputError(
                    f"{src} line {line}: the file ends inside ionic step {steps_done + 1} "
                    f"(after {steps_done} complete steps): a vasprun.xml cut mid-step; "
                    "cut it after the last </calculation> or read the XDATCAR"
                    if at_end
                    else f"{src} line {line}: malformed XML in ionic step {steps_done + 1} ({e})"
                ) from None
            if not at_end:
                raise InputError(f"{src} line {line}: malformed XML ({e})") from None
            warnings.append(
                f"the vasprun.xml ends after ionic step {steps_done} without closing </modeling> "
                "(the run was interrupted?); read the complete steps"
            )
        if getattr(stream, "truncated", False):
            warnings.append("the compressed stream ends early (truncated file)")
    if sink is None:
        raise InputError(f"{src}: no ionic step (<calculation> with a structure) in the file")
    flush()
    timestep = params.get("POTIM")
    if timestep is not None and timestep <= 0:
        warnings.append(f"POTIM = {timestep:g} is not a positive time step; give timestep_fs")
        timestep = None
    if params.get("IBRION", 0) != 0:
        warnings.append(f"IBRION = {params['IBRION']:g}: this is not a molecular-dynamics run")
    temperature = params.get("TEBEG") if params.get("TEBEG", 0) > 0 else None
    return sink.finish(warnings, timestep_fs=timestep, temperature_K=temperature)
