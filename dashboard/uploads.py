"""Getting trajectories onto the server: a streaming upload route, and the server-side
picker restricted to the configured roots.

The browser posts the raw file as the request body (``assets/upload.js``), which the
route copies to disk in chunks: nothing holds the whole file in memory, on either side.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from flask import Blueprint, jsonify, request

from iondiff_core.errors import InputError
from iondiff_core.io import find_simulations, locate_trajectory, sniff_species
from iondiff_core.io.incar import read_incar
from iondiff_core.io.xdatcar import compression_of, strip_compression_suffix

CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Files of an upload that go with the trajectory (stored under these names).
COMPANIONS = {"incar": "INCAR", "poscar": "POSCAR"}
#: File names that say nothing about the run (the run is named from its contents instead).
_GENERIC = re.compile(r"^(XDATCAR|vasprun\.xml|OUTCAR|trajectory|traj|dump|md)(\.[a-z0-9]+)?$", re.I)


def check_compressed(path: Path) -> None:
    """Read a compressed file to its end: a stream that ends early is a damaged file.

    Raises
    ------
    InputError
        Naming the file and how much of it could be decompressed.
    """
    import bz2
    import gzip
    import lzma

    kind = compression_of(path)
    if kind is None:
        return
    opener = {"gzip": gzip.open, "xz": lzma.open, "bz2": bz2.open}[kind]
    done = 0
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 16):  # small reads: the message says how far it got
                done += len(chunk)
    except (EOFError, OSError, lzma.LZMAError, ValueError) as exc:
        reason = "ends before its end-of-stream marker" if isinstance(exc, EOFError) else f"is corrupt ({exc})"
        raise InputError(
            f"{path.name}: the {kind} stream {reason} after {done / 1e6:.1f} MB of text: the file is damaged or was "
            "cut short (an incomplete copy or download?); copy it again"
        ) from None


def xdatcar_title(path: Path) -> str | None:
    """The first line (the SYSTEM title) of an XDATCAR, or None for other formats."""
    from iondiff_core.io.xdatcar import open_decompressed

    try:
        with open_decompressed(path) as f:
            line = f.readline(200).decode("utf-8", "replace").strip()
    except (InputError, OSError):
        return None
    return line or None


def source_name(path: Path, upload: bool = False, system: str | None = None, title: str | None = None) -> str:
    """A run's name: its folder (``LGPS_600K/XDATCAR``), else a telling file name, else the
    INCAR's SYSTEM, else the XDATCAR's title; never a bare "XDATCAR.gz"."""
    path = Path(path)
    file = path if path.is_file() else None
    if not upload:
        if path.is_dir():
            return path.name
        if _GENERIC.match(strip_compression_suffix(path.name)):
            return path.parent.name
    name = file.name if file is not None else path.name
    if not _GENERIC.match(strip_compression_suffix(name)):
        return name
    return (system or title or name).strip()[:120]


def inspect_source(path: Path, upload: bool = False, allow_truncated: bool = False) -> dict:
    """What the page shows before Run: species, timestep and temperature (from the INCAR
    beside the trajectory) and the run's name. Checks a compressed file to its end: a
    damaged one is refused unless ``allow_truncated``, which records why in ``damaged``
    (its complete frames are then analysed and the library entry flagged)."""
    path = Path(path)
    file = locate_trajectory(path) if path.is_dir() else path
    species = sniff_species(path)
    damaged = None
    try:
        check_compressed(file)
    except InputError as exc:
        if not allow_truncated:
            raise
        damaged = str(exc).split(": copy it again")[0].split("; copy it again")[0]
    info = {"species": species, "timestep_fs": None, "temperature_K": None, "incar": False, "warnings": [],
            "damaged": damaged}
    system = None
    incar = file.parent / "INCAR"
    if incar.is_file():
        inc = read_incar(incar)
        info.update(timestep_fs=inc["timestep_fs"], temperature_K=inc["temperature_K"], incar=True, warnings=inc["warnings"])
        system = (inc["tags"].get("SYSTEM") or "").strip().strip("'\"") or None
    title = xdatcar_title(file) if "XDATCAR" in file.name.upper() or compression_of(file) else None
    info["name"] = source_name(path if not upload else file, upload, system, title)
    info["poscar"] = (file.parent / "POSCAR").is_file()
    return info


def safe_name(name: str) -> str:
    """A file name with no folders, no leading dots and only harmless characters."""
    base = Path(str(name).replace("\\", "/")).name
    base = _SAFE.sub("_", base).lstrip(".") or "upload"
    return base[:120]


def upload_folder(uploads: Path, upload_id: str) -> Path:
    """The folder of one upload; ``upload_id`` must be one this server issued."""
    if not re.fullmatch(r"[0-9a-f]{32}", upload_id or ""):
        raise InputError("unknown upload")
    folder = uploads / upload_id
    if not folder.is_dir():
        raise InputError("unknown upload (it may have been removed)")
    return folder


def trajectory_of_upload(uploads: Path, upload_id: str) -> Path:
    """The trajectory path to analyse: the folder when it holds an INCAR, else the file."""
    folder = upload_folder(uploads, upload_id)
    files = [p for p in folder.iterdir()
             if p.is_file() and p.name not in COMPANIONS.values() and not p.name.endswith(".part")]
    if not files:
        raise InputError("the upload holds no trajectory yet (choose the trajectory file too)")
    return files[0]


def make_blueprint(uploads: Path, max_bytes: int) -> Blueprint:
    bp = Blueprint("uploads", __name__)

    @bp.post("/upload")
    def upload():
        """One file of an upload: the trajectory opens a new upload folder; an INCAR or a
        POSCAR joins an existing one (before or after its trajectory). Answers with what
        the folder holds so far (species, timestep, temperature, name)."""
        name = safe_name(request.args.get("name", "upload"))
        kind = request.args.get("kind", "trajectory")
        try:
            if kind in COMPANIONS:
                if request.args.get("upload_id"):
                    folder = upload_folder(uploads, request.args["upload_id"])
                else:  # the companion came first: its folder waits for the trajectory
                    folder = uploads / uuid.uuid4().hex
                    folder.mkdir(parents=True)
                name = COMPANIONS[kind]
            elif kind == "trajectory":
                if not name.upper().startswith("XDATCAR") and "." not in name:
                    name = f"XDATCAR_{name}"  # a bare name is read as an XDATCAR
                if request.args.get("upload_id"):
                    folder = upload_folder(uploads, request.args["upload_id"])
                    for old in folder.iterdir():  # a new trajectory replaces the previous one
                        if old.name not in COMPANIONS.values():
                            old.unlink()
                else:
                    folder = uploads / uuid.uuid4().hex
                    folder.mkdir(parents=True)
            else:
                raise InputError(f"unknown kind of file: {kind}")
            size = _stream_to(folder / name, max_bytes)
            out = {"ok": True, "upload_id": folder.name, "file": name, "size": size}
            try:
                traj = trajectory_of_upload(uploads, folder.name)
            except InputError:
                return jsonify(**out, ready=False)  # an INCAR or POSCAR before its trajectory
            try:
                info = inspect_source(traj, upload=True, allow_truncated=request.args.get("allow_truncated") == "1")
            except InputError as exc:
                if kind == "trajectory":
                    traj.unlink(missing_ok=True)
                    if not any(folder.iterdir()):
                        folder.rmdir()
                return jsonify(ok=False, error=str(exc).replace(str(traj), traj.name)), 400
            return jsonify(**out, ready=True, trajectory=traj.name, **info)
        except InputError as exc:
            return jsonify(ok=False, error=str(exc)), 400

    return bp


def _stream_to(path: Path, max_bytes: int) -> int:
    part = path.with_name(path.name + ".part")
    size = 0
    try:
        with open(part, "wb") as f:
            while chunk := request.stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"the file is larger than the {max_bytes // 1024**2} MB this server accepts")
                f.write(chunk)
        if size == 0:
            raise InputError("the file is empty")
        part.replace(path)
        return size
    except BaseException:
        part.unlink(missing_ok=True)
        if path.parent.exists() and not any(path.parent.iterdir()):
            path.parent.rmdir()
        raise


def resolve_server_path(user_path: str, roots: list[Path]) -> Path:
    """The real path of a user-given server path, if it lies inside an allowed root.

    Relative paths are taken inside each root in turn. Symlinks are resolved before the
    check, so a link that points outside a root is refused like ``..`` or an absolute path.
    """
    if not roots:
        raise InputError("this server allows no folders to pick from (set IONDIFF_ROOTS)")
    text = (user_path or "").strip()
    if not text or "\x00" in text:
        raise InputError("give a path inside the allowed folders")
    p = Path(text)
    candidates = [p] if p.is_absolute() else [root / p for root in roots]
    for cand in candidates:
        try:
            real = cand.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if any(real.is_relative_to(root.resolve()) for root in roots):
            return real
    raise InputError(f"{text}: not found inside the allowed folders")


def display_path(path: Path, roots: list[Path]) -> str:
    """``path`` as the user should see it: relative to the allowed root holding it (with
    the root's name when there are several), never the server's absolute path."""
    real = Path(path).resolve()
    for root in roots:
        r = root.resolve()
        if real.is_relative_to(r):
            rel = real.relative_to(r).as_posix() or "."
            return f"{root.name}/{rel}" if len(roots) > 1 else rel
    return Path(path).name


def list_server_simulations(roots: list[Path], limit: int = 500) -> list[dict]:
    """Simulations found under the roots, as dropdown options: the label relative to the
    roots (:func:`display_path`), the value a path :func:`resolve_server_path` accepts."""
    out = []
    for root in roots:
        if not root.is_dir():
            continue
        for sim in find_simulations(root):
            real = sim.resolve()
            if real.is_relative_to(root.resolve()):
                rel = real.relative_to(root.resolve()).as_posix()
                # Relative paths are tried in every root in turn: only the first root's are unambiguous.
                value = rel if root == roots[0] else str(real)
                out.append({"label": display_path(real, roots), "value": value})
            if len(out) >= limit:
                return out
    return out
