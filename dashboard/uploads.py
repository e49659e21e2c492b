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
from iondiff_core.io import find_simulations, sniff_species

CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    files = [p for p in folder.iterdir() if p.is_file() and p.name != "INCAR" and not p.name.endswith(".part")]
    if not files:
        raise InputError("the upload holds no trajectory")
    return folder if (folder / "INCAR").exists() and files[0].name.upper().startswith("XDATCAR") else files[0]


def make_blueprint(uploads: Path, max_bytes: int) -> Blueprint:
    bp = Blueprint("uploads", __name__)

    @bp.post("/upload")
    def upload():
        name = safe_name(request.args.get("name", "upload"))
        kind = request.args.get("kind", "trajectory")
        try:
            if kind == "incar":
                folder = upload_folder(uploads, request.args.get("upload_id", ""))
                name = "INCAR"
            else:
                if not name.upper().startswith("XDATCAR") and "." not in name:
                    name = f"XDATCAR_{name}"  # a bare name is read as an XDATCAR
                folder = uploads / uuid.uuid4().hex
                folder.mkdir(parents=True)
            size = _stream_to(folder / name, max_bytes)
            if kind == "incar":
                return jsonify(ok=True, upload_id=folder.name, name=name, size=size)
            try:
                species = sniff_species(folder / name)
            except InputError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                return jsonify(ok=False, error=str(exc).replace(str(folder / name), name)), 400
            return jsonify(ok=True, upload_id=folder.name, name=name, size=size, species=species)
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
