"""ReadLimits stop a read as soon as a cap is passed (never after reading everything),
with a message naming the limit, its value and the setting; only regular files are
opened (a FIFO, a device, a socket is an InputError at once, never a hang)."""

import gzip
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from iondiff_core import pipeline
from iondiff_core.cli import main
from iondiff_core.errors import InputError
from iondiff_core.io import ReadLimits, read_trajectory, sniff_species, write_xdatcar
from iondiff_core.io import frames as frames_mod
from iondiff_core.io import limits as limits_mod
from iondiff_core.io import xdatcar as xdatcar_mod
from iondiff_core.trajectory import Trajectory

N_ATOMS, N_FRAMES = 40, 4000


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A plain and a gzip XDATCAR of 40 atoms x 4000 frames (~5 MB of text)."""
    rng = np.random.default_rng(0)
    pos = (rng.random((1, N_ATOMS, 3)) + 0.002 * rng.standard_normal((N_FRAMES, N_ATOMS, 3))) % 1.0
    traj = Trajectory(pos, 12.0 * np.eye(3), ["Li"] * 20 + ["S"] * 20, timestep_fs=2.0, temperature_K=600.0)
    folder = tmp_path_factory.mktemp("long")
    plain = write_xdatcar(traj, folder / "XDATCAR")
    packed = write_xdatcar(traj, folder / "XDATCAR.gz")
    return plain, packed, plain.stat().st_size


@pytest.fixture
def recorded(monkeypatch):
    """The largest text byte count and frame count the readers checked against the limits."""
    seen = {"bytes": 0, "frames": 0}
    text, atoms = limits_mod.check_text_bytes, limits_mod.check_atom_frames

    def check_text(src, n):
        seen["bytes"] = max(seen["bytes"], n)
        text(src, n)

    def check_atoms(src, n_atoms, n_frames):
        seen["frames"] = max(seen["frames"], n_frames)
        atoms(src, n_atoms, n_frames)

    monkeypatch.setattr(xdatcar_mod, "check_text_bytes", check_text)
    monkeypatch.setattr(xdatcar_mod, "check_atom_frames", check_atoms)
    monkeypatch.setattr(frames_mod, "check_atom_frames", check_atoms)
    return seen


def test_decompressed_text_cap_stops_a_gzip_early(long_run, recorded):
    _, packed, text_size = long_run
    cap = 1_000_000
    with pytest.raises(InputError) as e:
        read_trajectory(packed, limits=ReadLimits(max_text_bytes=cap))
    msg = str(e.value)
    assert str(packed) in msg and "max_text_bytes = 1000000" in msg and "IONDIFF_MAX_TEXT_MB" in msg
    assert "--max-text-mb" in msg
    assert cap < recorded["bytes"] < text_size / 2  # stopped within a chunk of the cap
    assert read_trajectory(packed, limits=ReadLimits(max_text_bytes=2 * text_size)).n_frames == N_FRAMES


def test_plain_file_over_the_text_cap_is_refused_before_reading(long_run, monkeypatch):
    plain, _, text_size = long_run

    def no_read(self, size):
        raise AssertionError("read a file that is over the limit")

    monkeypatch.setattr(xdatcar_mod.DecompressedStream, "_next_chunk", no_read)
    with pytest.raises(InputError, match="max_text_bytes"):
        read_trajectory(plain, limits=ReadLimits(max_text_bytes=text_size - 1))


def test_atom_frame_cap_stops_reading_early(long_run, recorded):
    plain, packed, _ = long_run
    for path in (plain, packed):
        recorded["frames"] = 0
        with pytest.raises(InputError) as e:
            read_trajectory(path, keep="mobile", dtype=np.float32, limits=ReadLimits(max_atom_frames=20_000))
        msg = str(e.value)
        assert "max_atom_frames = 20,000" in msg and "IONDIFF_MAX_ATOM_FRAMES" in msg and "--max-atom-frames" in msg
        assert "40 atoms" in msg  # the file's atoms count, not only the kept ones
        assert 500 < recorded["frames"] < N_FRAMES / 2
    assert read_trajectory(plain, limits=ReadLimits(max_atom_frames=N_ATOMS * N_FRAMES)).n_frames == N_FRAMES


def test_limits_pass_through_the_pipeline_and_the_command_line(long_run, capsys):
    plain, _, _ = long_run
    with pytest.raises(InputError, match="max_atom_frames"):
        pipeline.analyze(plain, timestep_fs=2.0, limits=ReadLimits(max_atom_frames=1000))
    assert main(["analyze", str(plain), "-q", "--max-text-mb", "0.5", "--timestep-fs", "2"]) == 2
    assert "max_text_bytes = 500000" in capsys.readouterr().err
    assert main(["analyze", str(plain), "-q", "--max-atom-frames", "1000", "--timestep-fs", "2"]) == 2
    assert "max_atom_frames = 1,000" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_read_limits_must_be_positive_whole_numbers(bad):
    with pytest.raises(InputError, match="positive whole number"):
        ReadLimits(max_text_bytes=bad)


def _returns_quickly(fn, timeout_s=10.0):
    """Run ``fn`` in a thread; its outcome, or fail if it blocks (a FIFO open would)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "the reader blocked"
    return out


def test_fifo_device_and_socket_are_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "XDATCAR"
    os.mkfifo(fifo)
    sock_path = tmp_path / "run.extxyz"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path, kind in ((fifo, "FIFO"), (sock_path, "socket"), (Path("/dev/zero"), "character device")):
            for fn in (read_trajectory, sniff_species, xdatcar_mod.read_xdatcar):
                out = _returns_quickly(lambda: fn(path))
                assert isinstance(out.get("error"), InputError), (fn, path, out)
                assert kind in str(out["error"]) and "only regular files are read" in str(out["error"])
        out = _returns_quickly(lambda: main(["analyze", str(fifo), "-q", "--timestep-fs", "2"]))
        assert out["value"] == 2 and "FIFO" in capsys.readouterr().err
    finally:
        sock.close()


def test_fifo_beside_a_run_is_never_opened(tmp_path, long_run):
    """A folder whose XDATCAR is a FIFO holds no trajectory; a FIFO INCAR is not read."""
    plain, _, _ = long_run
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "XDATCAR")
    out = _returns_quickly(lambda: read_trajectory(run))
    assert isinstance(out.get("error"), InputError) and "no trajectory found" in str(out["error"])
    good = tmp_path / "good"
    good.mkdir()
    (good / "XDATCAR").write_bytes(plain.read_bytes()[:200_000])
    os.mkfifo(good / "INCAR")
    out = _returns_quickly(lambda: read_trajectory(good))
    assert "value" in out and out["value"].timestep_fs is None
    assert any("INCAR" in w for w in out["value"].warnings)


def test_gzip_reader_counts_only_regular_files(tmp_path):
    """open_decompressed itself refuses a FIFO (the INCAR reader and the sniffers use it)."""
    fifo = tmp_path / "XDATCAR.gz"
    os.mkfifo(fifo)
    out = _returns_quickly(lambda: xdatcar_mod.open_decompressed(fifo))
    assert isinstance(out.get("error"), InputError) and "FIFO" in str(out["error"])
    ok = tmp_path / "ok.gz"
    ok.write_bytes(gzip.compress(b"x" * 1000))
    with xdatcar_mod.open_decompressed(ok) as f:
        assert f.read() == b"x" * 1000 and f.text_bytes == 1000


@pytest.mark.parametrize("compress, suffix", [(lambda b: gzip.compress(b, 9), ".gz"),
                                              (lambda b: __import__("bz2").compress(b, 9), ".bz2"),
                                              (lambda b: __import__("lzma").compress(b), ".xz")])
def test_a_small_file_that_inflates_a_thousandfold_is_read_in_bounded_pieces(tmp_path, compress, suffix, monkeypatch):
    """A 20 MB run of one byte compresses to kilobytes: each decompressed piece stays
    at the size asked for (the memory of one read), never the whole inflated block."""
    text = b" " * (20 << 20)
    path = tmp_path / ("bomb" + suffix)
    path.write_bytes(compress(text))
    assert path.stat().st_size < 200_000
    pieces = []
    count = xdatcar_mod.DecompressedStream._count

    def record(self, out):
        pieces.append(len(out))
        return count(self, out)

    monkeypatch.setattr(xdatcar_mod.DecompressedStream, "_count", record)
    with xdatcar_mod.open_decompressed(path) as f:
        assert len(f.read(1000)) == 1000 and max(pieces) <= 65536
        total = 1000 + sum(len(b) for b in iter(lambda: f.read(1 << 20), b""))
    assert total == len(text) and max(pieces) <= 1 << 20 and not f.truncated
    pieces.clear()
    with xdatcar_mod.open_decompressed(path) as f:
        assert len(f.read()) == len(text) and max(pieces) <= 1 << 20
