"""Deployment settings, from environment variables with embedded defaults
(the README's "Environment variables" lists every one):

IONDIFF_DATA        data folder shared by every web and worker process (default ./data)
IONDIFF_ROOTS       os.pathsep-separated folders the server-side picker may read
IONDIFF_MAX_UPLOAD_MB  largest upload accepted (default 2048)
IONDIFF_MAX_REQUEST_MB  largest body of any other request, e.g. a callback (default 20)
IONDIFF_READ_TIMEOUT_S  seconds a client may stay silent while sending a request (default 60)
IONDIFF_SECRET_KEY  signs sessions and job handles (default: generated once, kept in the data folder)
IONDIFF_HOST, IONDIFF_PORT  where ``python app.py`` listens (see :func:`serve_address`)
REDIS_URL           if set, background jobs run on Celery workers through Redis
IONDIFF_RETENTION_DAYS  library entries (with their result, upload and stage files) not opened for this many
                    days are removed (default 0: kept for ever)
IONDIFF_MAX_DATA_GB     when the data folder holds more than this many GB, the least recently opened entries
                    are removed until it holds less (default 0: no quota)

Jobs and limits (docs/DEPLOY.md, "Jobs and limits"):

IONDIFF_MAX_JOBS          analyses running at once in the default mode, over every web process (default 2)
IONDIFF_MAX_QUEUED        jobs allowed to wait for a free slot; more are refused at once (default 20)
IONDIFF_JOB_TIME_LIMIT_S  a job running longer is stopped and reported failed (default 21600)
IONDIFF_MAX_TEXT_MB       largest decompressed trajectory text a job reads (default 20480)
IONDIFF_MAX_ATOM_FRAMES   largest atoms x frames a job reads (default 5e8: 6 GB of float32 positions)
IONDIFF_SESSION_CACHE_MB  memory the web process keeps open trajectories' results in (default 512)
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Config:
    data_dir: Path
    roots: list[Path] = field(default_factory=list)
    max_upload_bytes: int = 2048 * 1024**2
    redis_url: str | None = None
    secret_key: str = ""
    # Jobs and limits (dashboard/jobs.py).
    max_jobs: int = 2
    max_queued: int = 20
    job_time_limit_s: float = 21600.0
    max_text_bytes: int = 20480 * 1024**2
    max_atom_frames: int = 500_000_000
    session_cache_bytes: int = 512 * 1024**2
    # Stored state (dashboard.storage.cleanup): 0 turns a limit off.
    retention_days: float = 0.0
    max_data_bytes: int = 0
    max_request_bytes: int = 20 * 1024**2
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, data_dir=None, roots=None) -> "Config":
        data = Path(data_dir or os.environ.get("IONDIFF_DATA", "data")).resolve()
        if roots is None:
            roots = [r for r in os.environ.get("IONDIFF_ROOTS", "").split(os.pathsep) if r]
        cfg = cls(
            data_dir=data,
            roots=[Path(r).resolve() for r in roots],
            max_upload_bytes=int(float(os.environ.get("IONDIFF_MAX_UPLOAD_MB", "2048")) * 1024**2),
            redis_url=os.environ.get("REDIS_URL") or None,
            retention_days=_limit_env("IONDIFF_RETENTION_DAYS", "days"),
            max_data_bytes=int(_limit_env("IONDIFF_MAX_DATA_GB", "GB") * 1024**3),
            max_request_bytes=int(float(os.environ.get("IONDIFF_MAX_REQUEST_MB", "20")) * 1024**2),
            read_timeout_s=float(os.environ.get("IONDIFF_READ_TIMEOUT_S", "60")),
        )
        cfg.read_job_limits(os.environ)
        cfg.ensure_folders()
        cfg.secret_key = os.environ.get("IONDIFF_SECRET_KEY") or cfg._persistent_secret()
        return cfg

    def read_job_limits(self, env) -> None:
        """The jobs-and-limits settings; a value that is not a positive number is refused
        at start-up with the setting's name (never silently replaced)."""

        def number(name, default, lo, kind=float):
            return _env_number(env, name, default, lo, kind)

        mb = 1024**2
        self.max_jobs = number("IONDIFF_MAX_JOBS", self.max_jobs, 1, int)
        self.max_queued = number("IONDIFF_MAX_QUEUED", self.max_queued, 0, int)
        self.job_time_limit_s = number("IONDIFF_JOB_TIME_LIMIT_S", self.job_time_limit_s, 1)
        self.max_text_bytes = int(number("IONDIFF_MAX_TEXT_MB", self.max_text_bytes / mb, 1) * mb)
        self.max_atom_frames = number("IONDIFF_MAX_ATOM_FRAMES", self.max_atom_frames, 1, int)
        self.session_cache_bytes = int(number("IONDIFF_SESSION_CACHE_MB", self.session_cache_bytes / mb, 0) * mb)

    # Every process of a deployment derives the same paths from the one data folder.
    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def results(self) -> Path:
        return self.data_dir / "results"

    @property
    def stages(self) -> Path:
        return self.data_dir / "stages"

    @property
    def jobs(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def flask_cache(self) -> Path:
        return self.data_dir / "flask-cache"

    @property
    def library_db(self) -> Path:
        return self.data_dir / "library.sqlite"

    def ensure_folders(self) -> None:
        for p in (self.data_dir, self.uploads, self.results, self.stages, self.jobs, self.flask_cache):
            p.mkdir(parents=True, exist_ok=True)

    def _persistent_secret(self) -> str:
        p = self.data_dir / "secret_key"
        if not p.exists():
            # Readable by the server's user only, from its first byte (never chmod after writing).
            tmp = p.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            os.replace(tmp, p)  # several processes may race: any one of the keys wins for all
        elif p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)  # a key written by an older version was world-readable
        return p.read_text().strip()


def _env_number(env, name: str, default, lo: float, kind=float, unit: str = "", note: str = ""):
    """A setting from ``env``: ``default`` when unset or blank, else a finite number >= ``lo``
    (converted by ``kind``); anything else is refused with the setting's name."""
    text = env.get(name)
    if text is None or text.strip() == "":
        return default
    of = f" of {unit}" if unit else ""
    try:
        value = kind(float(text))
    except (ValueError, OverflowError):
        raise ValueError(f"{name}={text!r} is not a number{of}{note}") from None
    if not lo <= value < float("inf"):
        raise ValueError(f"{name}={text!r} must be a finite number{of} >= {lo}{note}")
    return value


def _limit_env(name: str, unit: str) -> float:
    """A storage limit from the environment: a number >= 0 of ``unit`` (unset or 0: no limit)."""
    return _env_number(os.environ, name, 0.0, 0, unit=unit, note=" (0 or unset: no limit)")


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
#: Ports tried after the default one when it is taken and IONDIFF_PORT is not set.
PORT_TRIES = 20


class AddressError(Exception):
    """The address ``python app.py`` was asked to listen on cannot be used (message says why and what to do)."""


def port_free(host: str, port: int) -> bool:
    """Whether a server can listen on ``host:port`` now (bound as werkzeug binds: SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressError(f"IONDIFF_HOST={host!r} is not an address of this machine ({exc})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


def serve_address(env=None, tries: int = PORT_TRIES) -> tuple[str, int, str]:
    """Host, port and a note for ``python app.py``.

    ``IONDIFF_HOST`` (default 127.0.0.1) and ``IONDIFF_PORT``: a port given explicitly
    is used or refused with :class:`AddressError` (never silently replaced); without
    one, 8050 or the next free port of the following ``tries`` is chosen and the note
    says so.
    """
    env = os.environ if env is None else env
    host = env.get("IONDIFF_HOST") or DEFAULT_HOST
    given = env.get("IONDIFF_PORT")
    if given:
        try:
            port = int(given)
        except ValueError:
            raise AddressError(f"IONDIFF_PORT={given!r} is not a port number (1-65535)") from None
        if not 0 < port < 65536:
            raise AddressError(f"IONDIFF_PORT={port} is not a port number (1-65535)")
        if not port_free(host, port):
            raise AddressError(
                f"port {port} on {host} is taken (IONDIFF_PORT={given}). Stop what uses it, or choose another port: "
                f"IONDIFF_PORT={port + 1} python app.py (or unset IONDIFF_PORT to take the next free one)."
            )
        return host, port, ""
    for port in range(DEFAULT_PORT, DEFAULT_PORT + tries + 1):
        if port_free(host, port):
            note = "" if port == DEFAULT_PORT else f"port {DEFAULT_PORT} is taken; using {port} (set IONDIFF_PORT to choose)"
            return host, port, note
    raise AddressError(
        f"ports {DEFAULT_PORT}-{DEFAULT_PORT + tries} on {host} are all taken; choose one with IONDIFF_PORT=PORT python app.py"
    )
