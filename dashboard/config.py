"""Deployment settings, from environment variables with embedded defaults.

IONDIFF_DATA        data folder shared by every web and worker process (default ./data)
IONDIFF_ROOTS       os.pathsep-separated folders the server-side picker may read
IONDIFF_MAX_UPLOAD_MB  largest upload accepted (default 2048)
IONDIFF_SECRET_KEY  signs sessions and job handles (default: generated once, kept in the data folder)
REDIS_URL           if set, background jobs run on Celery workers through Redis
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Config:
    data_dir: Path
    roots: list[Path] = field(default_factory=list)
    max_upload_bytes: int = 2048 * 1024**2
    redis_url: str | None = None
    secret_key: str = ""

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
        )
        cfg.ensure_folders()
        cfg.secret_key = os.environ.get("IONDIFF_SECRET_KEY") or cfg._persistent_secret()
        return cfg

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
            tmp = p.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(secrets.token_hex(32))
            os.replace(tmp, p)  # several processes may race: any one of the keys wins for all
        return p.read_text().strip()
