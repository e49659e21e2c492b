"""Bounds on what a read may cost, and the rule that only regular files are read.

:class:`ReadLimits` caps the decompressed text and the atoms x frames of one read;
:func:`iondiff_core.io.read_trajectory` applies it to every reader for the duration of
the read (:func:`applied`), and the readers stop as soon as a cap is passed, never after
reading everything. :func:`open_regular` opens a file without ever blocking: a FIFO, a
device or a socket is refused (a FIFO would hang the reader until a writer appears).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from iondiff_core.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no FIFOs to guard against, no O_NONBLOCK
    fcntl = None


@dataclass(frozen=True)
class ReadLimits:
    """Caps on one trajectory read (None: no cap).

    Parameters
    ----------
    max_text_bytes : int, optional
        Bytes of text after decompression (a small ``.gz`` can hold gigabytes).
        Plain files larger than this are refused before reading.
    max_atom_frames : int, optional
        Atoms in the file x frames read: the parsing work, whatever is kept.
    """

    max_text_bytes: int | None = None
    max_atom_frames: int | None = None

    def __post_init__(self):
        for name in ("max_text_bytes", "max_atom_frames"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise InputError(f"ReadLimits.{name} must be a positive whole number or None, got {v!r}")


#: Where each limit is set, for the messages: the engine's field, the command line, the server.
_SETTINGS = {
    "max_text_bytes": "ReadLimits.max_text_bytes; --max-text-mb on the command line, IONDIFF_MAX_TEXT_MB on the server",
    "max_atom_frames": "ReadLimits.max_atom_frames; --max-atom-frames on the command line, "
                       "IONDIFF_MAX_ATOM_FRAMES on the server",
}

_ACTIVE: contextvars.ContextVar[ReadLimits | None] = contextvars.ContextVar("iondiff_read_limits", default=None)


def active() -> ReadLimits | None:
    """The limits of the read in progress in this thread (None outside one)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def applied(limits: ReadLimits | None):
    """Apply ``limits`` to every reader called inside the ``with`` block (this thread)."""
    token = _ACTIVE.set(limits)
    try:
        yield limits
    finally:
        _ACTIVE.reset(token)


def check_text_bytes(src: str, n_bytes: int) -> None:
    """Raise if ``n_bytes`` of text pass the active ``max_text_bytes``."""
    cap = getattr(active(), "max_text_bytes", None)
    if cap is not None and n_bytes > cap:
        raise InputError(
            f"{src}: more than {cap / 1e6:.6g} MB of text after decompression: reading stopped at the limit "
            f"max_text_bytes = {cap} ({_SETTINGS['max_text_bytes']})"
        )


def check_atom_frames(src: str, n_atoms: int, n_frames: int) -> None:
    """Raise if ``n_atoms`` x ``n_frames`` passes the active ``max_atom_frames``."""
    cap = getattr(active(), "max_atom_frames", None)
    if cap is not None and n_atoms * n_frames > cap:
        raise InputError(
            f"{src}: {n_atoms:,} atoms x {n_frames:,} frames or more is beyond the limit max_atom_frames = {cap:,}: "
            f"reading stopped ({_SETTINGS['max_atom_frames']})"
        )


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path):
    """Open a regular file for binary reading; anything else is an InputError at once.

    Opened non-blocking and checked on the open descriptor, so a FIFO never hangs the
    caller and a file swapped between a check and the open cannot slip through.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as e:
        check_regular(path)  # a socket cannot be opened at all: say what it is
        raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: {_kind(mode)}, not a file: only regular files are read")
        if fcntl is not None:  # blocking reads from here on, as for any file
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | Path) -> None:
    """Refuse anything but a regular file (for libraries that open the path themselves:
    h5py, ASE), without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: {_kind(mode)}, not a file: only regular files are read")
