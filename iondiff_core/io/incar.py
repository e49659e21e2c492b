"""VASP INCAR reader: the timestep and temperature of an MD run (METHOD.md section 0).

VASP writes a frame to the XDATCAR every NBLOCK ionic steps of POTIM fs, so the time
between stored frames is POTIM x NBLOCK fs. What this reader does with incomplete
INCARs (IonDiff 1.6 exits on the first two):

* POTIM missing (``iondiff-tests/INCAR_POTIM_missing``): the timestep is unknown
  (VASP has no default POTIM for MD); ``timestep_fs`` is None and a warning says so.
  Analyses that need time then ask for it; those that do not still run.
* NBLOCK missing (``iondiff-tests/INCAR_NBLOCK_missing``): VASP's default NBLOCK = 1
  applies (every step stored), so ``timestep_fs`` = POTIM, with a warning.
* TEBEG not a number (``TEBEG = XXX.X`` in all ``iondiff-tests`` INCARs): the
  temperature is unknown (None) and a warning names the line.
* Both present (``INCAR_both_ok``): POTIM 1.5 x NBLOCK 10 = 15 fs.

Syntax handled as VASP reads it: ``TAG = value`` with case-insensitive tags, comments
after ``#`` or ``!``, several statements on one line separated by ``;``, quoted
values (which may hold ``;``, ``#`` or ``!``), lines continued with a trailing ``\\``,
Fortran exponents (``1.5D0``). A tag given twice keeps its first value, with a warning.
"""

from __future__ import annotations

import math
from pathlib import Path

from iondiff_core.errors import InputError
from iondiff_core.trajectory import TEMPERATURE_RANGE_K, TIMESTEP_RANGE_FS

_MAX_INCAR_BYTES = 4 << 20
_TEXT_BYTES = bytes(range(32, 256)) + b"\t\n\r\x0b\x0c"


def _statements(line: str) -> list[str]:
    """Split one logical line into statements, dropping comments (quote-aware)."""
    if '"' not in line and "'" not in line:
        for c in "#!":
            line = line.split(c, 1)[0]
        return line.split(";")
    out, cur, quote = [], [], None
    for ch in line:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "#!":
            break
        elif ch == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _number(value: str) -> float | None:
    tok = value.split()[0] if value.split() else ""
    tok = tok.replace("d", "e").replace("D", "e")
    try:
        x = float(tok)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def read_incar(path: str | Path) -> dict:
    """Read the MD settings of a VASP INCAR.

    Parameters
    ----------
    path : str or Path
        The INCAR file, or a folder holding one.

    Returns
    -------
    dict
        ``tags``: every tag (upper case) -> raw value string;
        ``POTIM`` (fs), ``NBLOCK`` (int), ``TEBEG`` (K), ``TEEND`` (K), ``IBRION``
        (int): parsed values or None when absent or unreadable;
        ``timestep_fs``: POTIM x NBLOCK (NBLOCK defaults to 1), None without POTIM;
        ``temperature_K``: TEBEG or None;
        ``warnings``: list of str, one per problem found (with the line).

    Raises
    ------
    InputError
        If the file cannot be read or is not text. Bad values only give warnings, since
        an explicit timestep or temperature may make them irrelevant.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "INCAR"
    src = str(path)
    try:
        from iondiff_core.io.xdatcar import open_decompressed

        with open_decompressed(path) as f:
            raw = f.read(_MAX_INCAR_BYTES + 1)
            while len(raw) <= _MAX_INCAR_BYTES:
                more = f.read(_MAX_INCAR_BYTES)
                if not more:
                    break
                raw += more
    except OSError as e:
        raise InputError(f"{src}: cannot read the INCAR ({e.strerror or e})") from None
    if len(raw) > _MAX_INCAR_BYTES:
        raise InputError(f"{src}: more than {_MAX_INCAR_BYTES >> 20} MB, not an INCAR")
    if raw.translate(None, _TEXT_BYTES):
        raise InputError(f"{src}: this is a binary file, not an INCAR")
    text = raw.decode("utf-8", errors="replace")

    tags: dict[str, str] = {}
    where: dict[str, int] = {}
    warnings: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i]
        # Fortran-style continuation: a trailing backslash joins the next line.
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        for stmt in _statements(line):
            if "=" not in stmt:
                continue
            tag, value = stmt.split("=", 1)
            tag = tag.strip().upper()
            value = value.strip().strip("\"'").strip()
            if not tag or " " in tag:
                warnings.append(f"{src} line {lineno}: cannot read {stmt.strip()!r} as TAG = value; ignored")
                continue
            if tag in tags:
                if tags[tag] != value:
                    warnings.append(
                        f"{src} line {lineno}: {tag} given again ({value!r}); "
                        f"the first value {tags[tag]!r} (line {where[tag]}) is used"
                    )
                continue
            tags[tag] = value
            where[tag] = lineno

    def num(tag: str, integer: bool = False, positive: bool = False):
        if tag not in tags:
            return None
        x = _number(tags[tag])
        ok = x is not None and (not integer or float(x).is_integer()) and (not positive or x > 0)
        if not ok:
            kind = "a positive number" if positive else ("a whole number" if integer else "a number")
            warnings.append(f"{src} line {where[tag]}: {tag} = {tags[tag]!r} is not {kind}; ignored")
            return None
        return int(x) if integer else float(x)

    potim = num("POTIM", positive=True)
    nblock = num("NBLOCK", integer=True, positive=True)
    tebeg = num("TEBEG")
    teend = num("TEEND")
    ibrion = num("IBRION", integer=True)
    t_lo, t_hi = TEMPERATURE_RANGE_K
    if tebeg is not None and not t_lo < tebeg < t_hi:
        warnings.append(
            f"{src} line {where['TEBEG']}: TEBEG = {tags['TEBEG']!r} K is not plausible as a temperature "
            f"(between {t_lo:g} and {t_hi:g} K); ignored"
        )
        tebeg = None

    if potim is None:
        timestep = None
        if "POTIM" not in tags:
            warnings.append(f"{src}: no POTIM, so the time between frames is unknown; give the timestep (fs)")
    else:
        if nblock is None and "NBLOCK" not in tags:
            warnings.append(
                f"{src}: no NBLOCK; VASP's default NBLOCK = 1 (every step stored) gives "
                f"{potim:g} fs per frame"
            )
        timestep = potim * (nblock or 1) if ("NBLOCK" not in tags or nblock is not None) else None
        if timestep is None:
            warnings.append(f"{src}: NBLOCK is unreadable, so the time between frames is unknown")
        elif not TIMESTEP_RANGE_FS[0] <= timestep <= TIMESTEP_RANGE_FS[1]:
            warnings.append(
                f"{src} line {where['POTIM']}: POTIM x NBLOCK = {potim:g} x {nblock or 1:g} = {timestep:.3g} fs between "
                f"frames is not plausible ({TIMESTEP_RANGE_FS[0]:g} to {TIMESTEP_RANGE_FS[1]:g} fs); ignored: "
                "give the timestep (fs)"
            )
            timestep = None
    if "TEBEG" not in tags:
        warnings.append(f"{src}: no TEBEG, so the temperature is unknown")
    if tebeg is not None and teend is not None and teend > 0 and abs(teend - tebeg) > 1e-9:
        warnings.append(f"{src}: temperature ramps from TEBEG = {tebeg:g} K to TEEND = {teend:g} K; TEBEG is used")
    if ibrion is not None and ibrion != 0:
        warnings.append(f"{src} line {where['IBRION']}: IBRION = {ibrion} is not molecular dynamics (IBRION = 0)")

    return {
        "tags": tags,
        "POTIM": potim,
        "NBLOCK": nblock,
        "TEBEG": tebeg,
        "TEEND": teend,
        "IBRION": ibrion,
        "timestep_fs": timestep,
        "temperature_K": tebeg,
        "warnings": warnings,
    }
