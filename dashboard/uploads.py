"""Getting trajectories onto the server: a streaming upload route, and the server-side
picker restricted to the configured roots.

The browser posts the raw file as the request body (``dashboard/assets/upload.js``), which the
route copies to disk in chunks: nothing holds the whole file in memory, on either side.

Security: an upload belongs to the browser session that made it. Its folder's name is
derived from the session's random id and a per-upload reference (:func:`upload_folder`),
so the browser only ever holds the reference, which is worthless in another session; the
folder name (the upload id) never leaves the server. ``/upload`` refuses cross-site posts
(``Origin``/``Sec-Fetch-Site``) and asks for a per-session token in a header
(:data:`TOKEN_HEADER`) that ``dashboard/assets/upload.js`` fetches from ``/upload/token``.
:func:`resolve_source` is the one place a page's source becomes a path.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, has_request_context, jsonify, request, session
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from iondiff_core.errors import InputError
from iondiff_core.io import find_simulations, locate_trajectory, sniff_species
from iondiff_core.io.incar import read_incar
from iondiff_core.io.xdatcar import compression_of, strip_compression_suffix

CHUNK = 1 << 20
#: The header that carries the session's upload token (see :func:`upload_token`).
TOKEN_HEADER = "X-IonDiff-Upload-Token"
#: Flask's session cookie (read back from a background job's callback context).
SESSION_COOKIE = "session"
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


class UploadRefused(InputError):
    """An upload request the server will not take; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _hmac(secret: str, *parts: str) -> str:
    return hmac.new(secret.encode(), "|".join(parts).encode(), hashlib.sha256).hexdigest()


def session_id(create: bool = False) -> str | None:
    """This request's browser-session id (random, kept in Flask's signed session cookie)."""
    sid = session.get("sid")
    if sid is None and create:
        sid = session["sid"] = secrets.token_hex(16)
    return sid


def upload_token(secret: str, sid: str) -> str:
    """The token a session's upload requests carry in :data:`TOKEN_HEADER` (anti-CSRF)."""
    return _hmac(secret, "upload-token", sid)


def _session_of_job(secret: str) -> dict:
    """The Flask session of the callback a background job runs for (read from the cookies
    Dash hands to the job: there is no request there)."""
    import dash
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    cookie = (dash.callback_context.cookies or {}).get(SESSION_COOKIE)
    if not cookie:
        return {}
    app = Flask("iondiff-session")
    app.secret_key = secret
    try:
        return SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie)
    except Exception:  # noqa: BLE001 - a bad signature is no session
        return {}


def current_session_id(secret: str) -> str | None:
    """The browser-session id of the request, or of the callback a background job runs."""
    if has_request_context():
        return session_id()
    return _session_of_job(secret).get("sid")


def upload_folder(uploads: Path, secret: str, sid: str | None, ref: str, create: bool = False) -> Path:
    """The folder of upload ``ref`` of session ``sid``: named by an HMAC of both, so a
    reference is worthless in any other session, and the name is never sent out."""
    if not sid or not re.fullmatch(r"[0-9a-f]{16,64}", ref or ""):
        raise InputError("unknown upload: choose the file again")
    folder = uploads / _hmac(secret, "upload", sid, ref)[:32]
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise InputError("unknown upload (it may have been removed, or belongs to another browser session): choose the file again")
    return folder


def trajectory_of_upload(folder: Path) -> Path:
    """The trajectory of an upload folder (the file that is neither INCAR nor POSCAR)."""
    files = [p for p in folder.iterdir()
             if p.is_file() and p.name not in COMPANIONS.values() and not p.name.endswith(".part")]
    if not files:
        raise InputError("the upload holds no trajectory yet (choose the trajectory file too)")
    return files[0]


def check_regular(path: Path, allowed: list[Path], label: str) -> Path:
    """The real path of ``path`` if it lies inside one of the ``allowed`` folders and is a
    regular file (or a folder); never opens it, so a FIFO cannot hang the server.

    Raises
    ------
    InputError
        Naming ``label`` (the name the user knows) and what is wrong.
    """
    try:
        real = Path(path).resolve(strict=True)
        st = os.stat(real)
    except (OSError, RuntimeError):
        raise InputError(f"{label}: not found (or a broken link)") from None
    if not any(real.is_relative_to(Path(a).resolve()) for a in allowed):
        raise InputError(f"{label}: a link to outside the allowed folders; refused")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise InputError(f"{label}: not a regular file (a pipe, socket or device); refused")
    return real


def _check_run_files(path: Path, allowed: list[Path], label: str) -> Path:
    """Check a picked run: the trajectory (located in a folder) and any INCAR/POSCAR beside it."""
    from iondiff_core.io import locate_trajectory

    path = check_regular(path, allowed, label)
    file = path
    if path.is_dir():
        try:
            file = locate_trajectory(path)  # lists regular files only; a link among them is checked next
        except InputError as exc:
            raise InputError(str(exc).replace(str(path), label)) from None
        check_regular(file, allowed, f"{label}/{file.name}")
    elif not path.is_file():
        raise InputError(f"{label}: not a regular file; refused")
    for companion in COMPANIONS.values():
        beside = file.parent / companion
        if os.path.lexists(beside):
            check_regular(beside, allowed, f"{label}/{companion}" if path.is_dir() else companion)
    return path


def resolve_source(cfg, source: dict) -> Path:
    """The path of a page's source (an upload of this browser session, or a run picked on
    the server), after checking every file the analysis will open: the trajectory and
    the INCAR/POSCAR beside it have their real paths inside the allowed roots (or this
    session's upload) and are regular files.

    Parameters
    ----------
    cfg : dashboard.config.Config
    source : dict
        ``{"kind": "upload", "ref": ...}`` or ``{"kind": "server", "path": ...}`` (a path
        relative to the roots, as :func:`display_path` shows it).

    Raises
    ------
    InputError
        What is wrong, in terms the user knows (never a server path or an upload id).
    """
    kind = (source or {}).get("kind")
    if kind == "upload":
        folder = upload_folder(cfg.uploads, cfg.secret_key, current_session_id(cfg.secret_key), source.get("ref", ""))
        traj = trajectory_of_upload(folder)
        return _check_run_files(traj, [folder], traj.name)
    if kind == "server":
        return resolve_server_path(source.get("path", ""), cfg.roots)
    raise InputError("choose a trajectory first (upload one or pick one on the server)")


def cross_site_refusal(req) -> str | None:
    """Why a state-changing request looks cross-site (None when it comes from this site)."""
    site = req.headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        return f"cross-site upload refused (Sec-Fetch-Site: {site})"
    origin = req.headers.get("Origin")
    if origin is not None:
        hosts = {req.host.lower()} | {h.strip().lower() for h in req.headers.get("X-Forwarded-Host", "").split(",") if h.strip()}
        if urlsplit(origin).netloc.lower() not in hosts:
            return "cross-site upload refused (the page posting it is not this server's)"
    return None


def make_blueprint(cfg, read_timeout_s: float | None = None) -> Blueprint:
    """The ``/upload`` route (and ``/upload/token``) of the app configured by ``cfg``."""
    bp = Blueprint("uploads", __name__)
    uploads, secret = cfg.uploads, cfg.secret_key

    @bp.get("/upload/token")
    def token():
        """This session's upload token (same-origin pages only can read the answer)."""
        resp = jsonify(token=upload_token(secret, session_id(create=True)), header=TOKEN_HEADER)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @bp.post("/upload")
    def upload():
        """One file of an upload: the trajectory opens a new upload folder; an INCAR or a
        POSCAR joins an existing one (before or after its trajectory). Answers with what
        the folder holds so far (species, timestep, temperature, name) and the upload's
        reference for this session (``ref``)."""
        max_bytes = cfg.max_upload_bytes
        request.max_content_length = max_bytes + 1  # this route streams, with its own cap (not IONDIFF_MAX_REQUEST_MB)
        try:
            why = cross_site_refusal(request)
            if why:
                raise UploadRefused(why, 403)
            sid = session_id()
            sent = request.headers.get(TOKEN_HEADER, "")
            if not sid or not hmac.compare_digest(sent.encode(), upload_token(secret, sid).encode()):
                raise UploadRefused("upload refused: no valid upload token for this session (reload the page)", 403)
            if request.content_length is not None and request.content_length > max_bytes:
                raise UploadRefused(f"the file is larger than the {max_bytes // 1024**2} MB this server accepts "
                                    "(IONDIFF_MAX_UPLOAD_MB)", 413)
            name = safe_name(request.args.get("name", "upload"))
            kind = request.args.get("kind", "trajectory")
            ref = request.args.get("ref") or ""
            if kind in COMPANIONS:
                # A companion may come before its trajectory: its folder then waits for it.
                ref = ref or secrets.token_hex(16)
                folder = upload_folder(uploads, secret, sid, ref, create=not request.args.get("ref"))
                name = COMPANIONS[kind]
            elif kind == "trajectory":
                if not name.upper().startswith("XDATCAR") and "." not in name:
                    name = f"XDATCAR_{name}"  # a bare name is read as an XDATCAR
                if ref:
                    folder = upload_folder(uploads, secret, sid, ref)
                    for old in folder.iterdir():  # a new trajectory replaces the previous one
                        if old.name not in COMPANIONS.values():
                            old.unlink()
                else:
                    ref = secrets.token_hex(16)
                    folder = upload_folder(uploads, secret, sid, ref, create=True)
            else:
                raise InputError(f"unknown kind of file: {kind}")
            size = _stream_to(folder / name, max_bytes, read_timeout_s)
            out = {"ok": True, "ref": ref, "file": name, "size": size}
            try:
                traj = trajectory_of_upload(folder)
            except InputError:
                return jsonify(**out, ready=False)  # an INCAR or POSCAR before its trajectory
            try:
                _check_run_files(traj, [folder], traj.name)
                info = inspect_source(traj, upload=True, allow_truncated=request.args.get("allow_truncated") == "1")
            except InputError as exc:
                if kind == "trajectory":
                    traj.unlink(missing_ok=True)
                    if not any(folder.iterdir()):
                        folder.rmdir()
                return jsonify(ok=False, error=_hide(str(exc), folder)), 400
            return jsonify(**out, ready=True, trajectory=traj.name, **info)
        except UploadRefused as exc:
            return jsonify(ok=False, error=str(exc)), exc.status, {"Connection": "close"}  # its body may be unread
        except InputError as exc:
            return jsonify(ok=False, error=_hide(str(exc), uploads)), 400

    return bp


def _hide(text: str, folder: Path) -> str:
    """``text`` without the server's upload folder (a message names files as the user does)."""
    return text.replace(str(folder) + os.sep, "").replace(str(folder), "the upload")


def _sink(part: Path):
    """The file an upload is written to (a seam for the full-disk test)."""
    return open(part, "wb")


def _stream_to(path: Path, max_bytes: int, read_timeout_s: float | None = None) -> int:
    """Copy the request body to ``path`` in chunks, through ``path.part``: a refused,
    stalled or failed upload leaves no file behind (and no empty folder). The socket's
    read timeout (``read_timeout_s``) is set for every request by the app factory."""
    part = path.with_name(path.name + ".part")
    size = 0
    try:
        with _sink(part) as f:
            while True:
                try:
                    chunk = request.stream.read(CHUNK)
                except RequestEntityTooLarge:
                    raise UploadRefused(f"the file is larger than the {max_bytes // 1024**2} MB this server accepts "
                                        "(IONDIFF_MAX_UPLOAD_MB)", 413) from None
                except (TimeoutError, ClientDisconnected) as exc:
                    # werkzeug reports the socket's timeout as a disconnection caused by it
                    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
                        raise UploadRefused(f"the upload stalled: no data for {read_timeout_s:g} s "
                                            "(IONDIFF_READ_TIMEOUT_S)", 408) from None
                    raise UploadRefused("the upload was cut off before its end (connection lost)", 400) from None
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRefused(f"the file is larger than the {max_bytes // 1024**2} MB this server accepts "
                                        "(IONDIFF_MAX_UPLOAD_MB)", 413)
                f.write(chunk)
        if size == 0:
            raise InputError("the file is empty")
        part.replace(path)
        return size
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadRefused("the server's disk is full: the upload was not kept. Tell the server's "
                                "administrator (or delete old results in the Library) and try again", 507) from None
        raise
    finally:
        part.unlink(missing_ok=True)
        if path.parent.exists() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def resolve_server_path(user_path: str, roots: list[Path]) -> Path:
    """The real path of a user-given server path, if it lies inside an allowed root.

    Relative paths are taken inside each root in turn (with several roots, a path that
    starts with a root's name, as :func:`display_path` writes it, first inside that root).
    Symlinks are resolved before the check, so a link that points outside a root is
    refused like ``..`` or an absolute path.
    """
    if not roots:
        raise InputError("this server allows no folders to pick from (set IONDIFF_ROOTS)")
    text = (user_path or "").strip()
    if not text or "\x00" in text:
        raise InputError("give a path inside the allowed folders")
    p = Path(text)
    if p.is_absolute():
        candidates = [p]
    else:
        named = [root / Path(*p.parts[1:]) for root in roots if len(roots) > 1 and p.parts[0] == root.name]
        candidates = named + [root / p for root in roots]
    for cand in candidates:
        try:
            real = cand.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if any(real.is_relative_to(root.resolve()) for root in roots):
            return _check_run_files(real, roots, display_path(real, roots))
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
    roots (:func:`display_path`), the value the same relative path (never the server's
    absolute path), which :func:`resolve_server_path` accepts."""
    out = []
    for root in roots:
        if not root.is_dir():
            continue
        for sim in find_simulations(root):
            real = sim.resolve()
            if real.is_relative_to(root.resolve()):
                shown = display_path(real, roots)
                out.append({"label": shown, "value": shown})
            if len(out) >= limit:
                return out
    return out
