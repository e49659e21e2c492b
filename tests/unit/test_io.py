"""Readers: XDATCAR (all header/block variants, compression, errors), INCAR, ASE formats."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

from iondiff_core.errors import InputError
from iondiff_core.io import (
    find_simulations,
    open_decompressed,
    read_incar,
    read_trajectory,
    read_xdatcar,
    sniff_species,
    write_xdatcar,
)
from iondiff_core.trajectory import Trajectory

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL = DATA / "real"
IONDIFF_TESTS = DATA / "iondiff-tests"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")
needs_iondiff_tests = pytest.mark.skipif(not IONDIFF_TESTS.is_dir(), reason="shared iondiff-tests not present")

CELL = np.array([[8.0, 0.0, 0.0], [1.5, 9.0, 0.0], [0.5, -0.7, 10.0]])
SPECIES = ["Li"] * 4 + ["P"] * 2 + ["S"] * 6


def make_traj(n_frames=7, variable=False, seed=0, species=SPECIES) -> Trajectory:
    rng = np.random.default_rng(seed)
    pos = rng.random((n_frames, len(species), 3))
    if variable:
        cells = CELL[None] * (1 + 0.02 * rng.standard_normal((n_frames, 1, 1)))
        cells = cells + 0.05 * rng.standard_normal((n_frames, 3, 3))
    else:
        cells = CELL
    return Trajectory(pos, cells, list(species), timestep_fs=2.5, temperature_K=700.0, source="test")


def xdatcar_text(
    traj: Trajectory,
    vasp4=False,
    cartesian=False,
    scale=1.0,
    labels=False,
    variable=None,
    title="test",
    marker=None,
) -> str:
    """An XDATCAR written by hand (independent of write_xdatcar), with options."""
    names, counts = [], []
    for s in traj.species:
        if names and names[-1] == s:
            counts[-1] += 1
        else:
            names.append(s)
            counts.append(1)
    variable = traj.variable_cell if variable is None else variable
    kind = "Cartesian" if cartesian else "Direct"
    marker = marker or (kind + " configuration=")

    def header(cell):
        raw = cell / (scale if scale > 0 else 1.0)
        s = f"{title}\n  {scale:.10g}\n"
        s += "".join(" %.12f %.12f %.12f\n" % tuple(v) for v in raw)
        if not vasp4:
            s += "   " + "   ".join(names) + "\n"
        return s + "   " + "   ".join(map(str, counts)) + "\n"

    out = [] if variable else [header(traj.cells[0])]
    for t in range(traj.n_frames):
        if variable:
            out.append(header(traj.cells[t]))
        out.append(f"{marker} {t + 1:6d}\n")
        cart = traj.positions_frac[t] @ traj.cells[t]
        xyz = (cart / (scale if scale > 0 else 1.0)) if cartesian else traj.positions_frac[t]
        for i, r in enumerate(xyz):
            out.append("%14.10f%14.10f%14.10f" % tuple(r) + (f" {traj.species[i]}" if labels else "") + "\n")
    return "".join(out)


def write(tmp_path: Path, text: str | bytes, name="XDATCAR") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def assert_same(a: Trajectory, b: Trajectory, atol=1e-9):
    assert a.species == b.species
    assert a.positions_frac.shape == b.positions_frac.shape
    np.testing.assert_allclose(a.positions_frac, b.positions_frac, atol=atol, rtol=0)
    np.testing.assert_allclose(a.cells, b.cells, atol=atol, rtol=0)


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("suffix", ["", ".gz", ".xz", ".bz2"])
def test_write_read_round_trip(tmp_path, variable, suffix):
    traj = make_traj(variable=variable)
    path = write_xdatcar(traj, tmp_path / f"XDATCAR{suffix}")
    back = read_xdatcar(path)
    assert_same(traj, back, atol=5e-9)  # 8 decimals written
    assert back.variable_cell == variable
    assert back.positions_frac.dtype == np.float64
    assert back.warnings == []
    if not variable:
        assert back.cells.strides[0] == 0  # a fixed cell is stored once


def test_write_incar_round_trip(tmp_path):
    traj = make_traj()
    write_xdatcar(traj, tmp_path / "XDATCAR.gz", write_incar=True)
    back = read_trajectory(tmp_path)
    assert back.timestep_fs == pytest.approx(2.5)
    assert back.temperature_K == pytest.approx(700.0)


def test_non_contiguous_species_round_trip(tmp_path):
    traj = make_traj(species=["Li", "Li", "S", "Li", "S"])
    back = read_xdatcar(write_xdatcar(traj, tmp_path / "XDATCAR"))
    assert back.species == traj.species


def test_compression_detected_by_magic_bytes_not_name(tmp_path):
    traj = make_traj()
    text = xdatcar_text(traj).encode()
    for comp, name in ((gzip.compress, "XDATCAR"), (lzma.compress, "XDATCAR.gz"), (bz2.compress, "traj_600K")):
        p = write(tmp_path, comp(text), name)
        assert_same(traj, read_xdatcar(p))


@pytest.mark.parametrize("cartesian", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1.7, -1.0])
def test_direct_cartesian_and_scale(tmp_path, cartesian, scale):
    traj = make_traj()
    if scale < 0:  # negative scale = the cell volume in Å^3
        scale = -abs(np.linalg.det(CELL))
    p = write(tmp_path, xdatcar_text(traj, cartesian=cartesian, scale=scale))
    assert_same(traj, read_xdatcar(p), atol=1e-8)


@pytest.mark.parametrize("cartesian", [False, True])
def test_variable_cell(tmp_path, cartesian):
    traj = make_traj(variable=True)
    p = write(tmp_path, xdatcar_text(traj, cartesian=cartesian))
    back = read_xdatcar(p)
    assert back.variable_cell
    assert_same(traj, back, atol=1e-8)


def test_three_scale_factors(tmp_path):
    traj = make_traj()
    text = xdatcar_text(traj).split("\n")
    text[1] = " 2.0 1.0 0.5"
    raw = np.array([[float(x) for x in line.split()] for line in text[2:5]])
    for i in range(3):
        text[2 + i] = " %.12f %.12f %.12f" % tuple(raw[i] / np.array([2.0, 1.0, 0.5]))
    back = read_xdatcar(write(tmp_path, "\n".join(text)))
    np.testing.assert_allclose(back.cells[0], CELL, atol=1e-10)


def test_small_chunks_give_the_same_result(tmp_path):
    for variable in (False, True):
        traj = make_traj(n_frames=300, variable=variable)
        p = write(tmp_path, xdatcar_text(traj), f"XDATCAR_{variable}")
        assert_same(read_xdatcar(p), read_xdatcar(p, chunk_bytes=1000))


def test_unusual_file_name_recognised_by_content(tmp_path):
    traj = make_traj()
    p = write(tmp_path, gzip.compress(xdatcar_text(traj).encode()), "md_run_600K.txt")
    assert_same(traj, read_trajectory(p, timestep_fs=1.0))
    assert sniff_species(p) == ["Li", "P", "S"]


def test_crlf_line_endings(tmp_path):
    traj = make_traj()
    p = write(tmp_path, xdatcar_text(traj).replace("\n", "\r\n"))
    assert_same(traj, read_xdatcar(p))


# --------------------------------------------------------------------------- VASP 4 headers
def test_vasp4_header_needs_species(tmp_path):
    traj = make_traj()
    p = write(tmp_path, xdatcar_text(traj, vasp4=True, title="unknown system"))
    with pytest.raises(InputError, match=r"line 6: VASP 4 header without species.*species="):
        read_xdatcar(p)
    back = read_xdatcar(p, species=["Li", "P", "S"])
    assert_same(traj, back)


def test_vasp4_species_from_title(tmp_path):
    traj = make_traj()
    p = write(tmp_path, xdatcar_text(traj, vasp4=True, title="Li P S"))
    back = read_xdatcar(p)
    assert back.species == SPECIES
    assert any("title" in w for w in back.warnings)


def test_vasp4_species_from_potcar(tmp_path):
    traj = make_traj()
    p = write(tmp_path, xdatcar_text(traj, vasp4=True, title="no names here"))
    (tmp_path / "POTCAR").write_text(
        "  PAW_PBE Li_sv 10Sep2004\n   TITEL  = PAW_PBE Li_sv 10Sep2004\n End of Dataset\n"
        "  PAW_PBE P 06Sep2000\n   TITEL  = PAW_PBE P 06Sep2000\n End of Dataset\n"
        "  PAW_PBE S 06Sep2000\n   TITEL  = PAW_PBE S 06Sep2000\n End of Dataset\n"
    )
    back = read_trajectory(p, timestep_fs=1.0)
    assert back.species == SPECIES
    assert any("POTCAR" in w for w in back.warnings)


def test_vasp4_species_from_labels(tmp_path):
    traj = make_traj()
    back = read_xdatcar(write(tmp_path, xdatcar_text(traj, vasp4=True, labels=True)))
    assert back.species == SPECIES


def test_vasp46_xdatcar_is_refused_clearly(tmp_path):
    text = "    12    12     1\n  0.1E+02  0.1E-08  0.1E-08  0.1E-08  0.5E-15\n  0.5E-15\n  CAR\n sys\n\n 0.1 0.2 0.3\n"
    with pytest.raises(InputError, match=r"line 1: this is a VASP 4.x XDATCAR"):
        read_xdatcar(write(tmp_path, text))


def test_vasp6_species_with_hash_suffix(tmp_path):
    traj = make_traj()
    text = xdatcar_text(traj).replace("   Li   P   S\n", "   Li_sv/7f2d   P/12ab   S\n")
    assert read_xdatcar(write(tmp_path, text)).species == SPECIES


# --------------------------------------------------------------------------- truncation
def test_truncated_last_frame_is_dropped_with_warning(tmp_path):
    traj = make_traj(n_frames=5)
    text = xdatcar_text(traj)
    lines = text.splitlines(keepends=True)
    cut = "".join(lines[: len(lines) - 7])  # frame 5 keeps 5 of 12 atom lines
    back = read_xdatcar(write(tmp_path, cut))
    assert back.n_frames == 4
    assert_same(Trajectory(traj.positions_frac[:4], CELL, SPECIES), back)
    assert back.warnings == ["dropped incomplete last frame 5 (5 of 12 atoms)"]


def test_truncated_mid_line_and_mid_number(tmp_path):
    traj = make_traj(n_frames=3)
    text = xdatcar_text(traj)
    back = read_xdatcar(write(tmp_path, text[:-20]))  # cut inside the last line
    assert back.n_frames == 2
    assert "dropped incomplete last frame 3 (11 of 12 atoms)" in back.warnings


def test_truncated_inside_next_marker(tmp_path):
    traj = make_traj(n_frames=3)
    text = xdatcar_text(traj)
    cut = text[: text.rindex("Direct configuration=") + 3]  # "Dir"
    back = read_xdatcar(write(tmp_path, cut))
    assert back.n_frames == 2
    assert any("frame 3" in w for w in back.warnings)


def test_truncated_gzip_stream(tmp_path):
    traj = make_traj(n_frames=200)
    data = gzip.compress(xdatcar_text(traj).encode())
    back = read_xdatcar(write(tmp_path, data[: len(data) * 2 // 3], "XDATCAR.gz"))
    assert 0 < back.n_frames < 200
    np.testing.assert_allclose(back.positions_frac, traj.positions_frac[: back.n_frames], atol=1e-9)
    assert any("truncated" in w for w in back.warnings)


@pytest.mark.parametrize("compress, name", [(lambda b: b, "XDATCAR"), (gzip.compress, "XDATCAR.gz"),
                                            (bz2.compress, "XDATCAR.bz2"), (lzma.compress, "XDATCAR.xz")])
def test_decompressed_stream_is_a_proper_binary_file(tmp_path, compress, name):
    import io

    text = xdatcar_text(make_traj(n_frames=300)).encode()
    path = write(tmp_path, compress(text), name)
    with open_decompressed(path) as f:
        sizes = [len(f.read(n)) for n in (1, 10, 70000, 5)]
        assert sizes == [1, 10, 70000, 5]
        assert f.read() == text[70016:] and f.read(10) == b""
    with io.BufferedReader(open_decompressed(path)) as f:
        assert f.readline() == text.split(b"\n", 1)[0] + b"\n"
        assert sum(1 for _ in f) == text.count(b"\n") - 1


def test_truncated_variable_cell_header(tmp_path):
    traj = make_traj(n_frames=4, variable=True)
    text = xdatcar_text(traj)
    last_header = text.rindex("test\n")
    back = read_xdatcar(write(tmp_path, text[: last_header + 40]))  # cut in frame 4's cell block
    assert back.n_frames == 3
    assert any("incomplete cell header" in w for w in back.warnings)


def test_single_truncated_frame_is_an_error(tmp_path):
    traj = make_traj(n_frames=1)
    text = xdatcar_text(traj)
    with pytest.raises(InputError, match="no complete frame.*3 of 12"):
        read_xdatcar(write(tmp_path, "".join(text.splitlines(keepends=True)[:11])))


def test_trailing_blank_lines_are_fine(tmp_path):
    traj = make_traj()
    assert read_xdatcar(write(tmp_path, xdatcar_text(traj) + "\n\n  \n")).n_frames == traj.n_frames


# --------------------------------------------------------------------------- malformed input
def bad(tmp_path, text, name="XDATCAR"):
    with pytest.raises(InputError) as e:
        read_xdatcar(write(tmp_path, text, name))
    msg = str(e.value)
    assert "\n" not in msg and name in msg
    return msg


def test_empty_file(tmp_path):
    assert "empty" in bad(tmp_path, "")
    assert "empty" in bad(tmp_path, "  \n\n", "XDATCAR2")


def test_binary_junk(tmp_path):
    junk = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert "binary" in bad(tmp_path, junk)
    assert "binary" in bad(tmp_path, gzip.compress(junk), "XDATCAR.gz")


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(xdatcar_text(make_traj()).encode()))
    data[40:60] = b"\x00" * 20
    assert "corrupt gzip" in bad(tmp_path, bytes(data), "XDATCAR.gz")


def test_not_an_xdatcar(tmp_path):
    assert "line 2" in bad(tmp_path, "hello world\nthis is a text file\nnothing else\n")
    msg = bad(tmp_path, "title\n1.0\n1 0 0\n0 1 0\n0 0 1\nLi\n1\nSelective dynamics\nDirect\n0 0 0\n", "POSCAR")
    assert "line 8" in msg and "selective dynamics" in msg.lower()


def test_bad_cell_vector(tmp_path):
    text = xdatcar_text(make_traj()).split("\n")
    text[3] = "5.0 abc 0"
    msg = bad(tmp_path, "\n".join(text))
    assert "line 4: the cell vector must be three numbers, got '5.0 abc 0'" in msg


def test_degenerate_cell(tmp_path):
    text = xdatcar_text(make_traj()).split("\n")
    text[4] = text[3]
    assert "line 3" in bad(tmp_path, "\n".join(text)) and "linearly dependent" in bad(tmp_path, "\n".join(text))


@pytest.mark.parametrize("scale", ["abc", "0", "nan", "1.0 2.0"])
def test_bad_scale(tmp_path, scale):
    text = xdatcar_text(make_traj()).split("\n")
    text[1] = scale
    assert "line 2" in bad(tmp_path, "\n".join(text))


def test_species_count_mismatch(tmp_path):
    text = xdatcar_text(make_traj()).replace("   Li   P   S\n", "   Li   P\n")
    msg = bad(tmp_path, text)
    assert "line 6: 2 species names" in msg and "3 atom counts" in msg


def test_counts_not_integers(tmp_path):
    text = xdatcar_text(make_traj()).replace("   4   2   6\n", "   4   2.5   6\n")
    assert "line 7: the atom counts must be whole numbers" in bad(tmp_path, text)


def test_absurd_atom_count_refused_early(tmp_path):
    text = xdatcar_text(make_traj()).replace("   4   2   6\n", "   4   2   1000000000\n")
    assert "1,000,000,006 atoms" in bad(tmp_path, text)


def test_frame_with_wrong_number_of_columns(tmp_path):
    traj = make_traj(n_frames=4)
    lines = xdatcar_text(traj).split("\n")
    # frame 3 starts at line 8 + 2 * 13 = 34 (marker), atom 5 at line 39
    assert lines[33].startswith("Direct")
    lines[38] = "  0.1  0.2"
    assert "line 39: expected three coordinates (frame 3), got 2 columns" in bad(tmp_path, "\n".join(lines))
    lines[38] = "  0.1  0.2  0.3  0.4"
    assert "line 39:" in bad(tmp_path, "\n".join(lines), "XDATCAR_b")


def test_non_numeric_coordinate(tmp_path):
    lines = xdatcar_text(make_traj(n_frames=4)).split("\n")
    lines[50] = "  0.1  x.y  0.3"
    assert "line 51: 'x.y' is not a number (frame 4)" in bad(tmp_path, "\n".join(lines))


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_nan_inf(tmp_path, value):
    lines = xdatcar_text(make_traj(n_frames=4)).split("\n")
    lines[22] = f"  0.1  {value}  0.3"
    assert f"line 23: non-finite coordinate '{value}'" in bad(tmp_path, "\n".join(lines))


def test_frame_missing_a_line_in_the_middle(tmp_path):
    lines = xdatcar_text(make_traj(n_frames=4)).split("\n")
    del lines[25]  # an atom line of frame 2 (lines 21-33)
    assert "line 33: frame 2 ends after 11 of 12 atom lines" in bad(tmp_path, "\n".join(lines))


def test_frame_with_an_extra_line(tmp_path):
    lines = xdatcar_text(make_traj(n_frames=4)).split("\n")
    lines.insert(30, "  0.1  0.2  0.3")
    assert "frame 2 has 13 lines for 12 atoms" in bad(tmp_path, "\n".join(lines))


def test_empty_line_inside_frame(tmp_path):
    lines = xdatcar_text(make_traj(n_frames=4)).split("\n")
    lines[40] = ""
    assert "line 41: empty line inside frame 3" in bad(tmp_path, "\n".join(lines))


def test_variable_cell_bad_lattice_line(tmp_path):
    lines = xdatcar_text(make_traj(n_frames=3, variable=True)).split("\n")
    # frame 2 header starts at line 1 + 20 = 21; its 2nd lattice vector is line 24
    assert lines[20] == "test"
    lines[23] = "1.0 2.0"
    assert "line 24: the cell vector must be three numbers" in bad(tmp_path, "\n".join(lines))


def test_variable_cell_composition_change(tmp_path):
    lines = xdatcar_text(make_traj(n_frames=3, variable=True)).split("\n")
    lines[26] = "   4   2   5"
    assert "line 27: the atom counts changed" in bad(tmp_path, "\n".join(lines))


def test_error_in_a_late_chunk_names_the_right_line(tmp_path):
    traj = make_traj(n_frames=400)
    lines = xdatcar_text(traj).split("\n")
    target = 7 + 13 * 350 + 5  # 0-based index of an atom line in frame 351
    lines[target] = "  0.1  0.2  oops"
    p = write(tmp_path, "\n".join(lines))
    with pytest.raises(InputError, match=rf"line {target + 1}: 'oops' is not a number \(frame 351\)"):
        read_xdatcar(p, chunk_bytes=2000)


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no trajectory found"):
        read_trajectory(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        read_trajectory(tmp_path / "missing")
    traj = make_traj()
    write_xdatcar(traj, tmp_path / "XDATCAR_600K")
    write_xdatcar(traj, tmp_path / "XDATCAR_700K")
    with pytest.raises(InputError, match="several trajectories"):
        read_trajectory(tmp_path)
    with pytest.raises(InputError, match="timestep_fs must be between 0.01 and 100000 fs"):
        read_trajectory(tmp_path / "XDATCAR_600K", timestep_fs=-1)


# --------------------------------------------------------------------------- read_trajectory + INCAR
def test_read_trajectory_folder_with_named_xdatcar_and_incar(tmp_path):
    traj = make_traj()
    write_xdatcar(traj, tmp_path / "XDATCAR_600K.xz")
    (tmp_path / "INCAR").write_text("IBRION = 0 ; POTIM = 2.0 # fs\nnblock=5 ! every 5 steps\nTEBEG = 600\n")
    back = read_trajectory(tmp_path)
    assert back.timestep_fs == 10.0 and back.temperature_K == 600.0 and back.warnings == []
    over = read_trajectory(tmp_path, timestep_fs=3.0, temperature_K=900)
    assert over.timestep_fs == 3.0 and over.temperature_K == 900.0


def test_read_trajectory_without_incar_warns(tmp_path):
    write_xdatcar(make_traj(), tmp_path / "XDATCAR")
    back = read_trajectory(tmp_path)
    assert back.timestep_fs is None
    assert any("timestep" in w for w in back.warnings)
    with pytest.raises(InputError, match="timestep is unknown"):
        back.time_ps()


def test_incar_syntax(tmp_path):
    p = tmp_path / "INCAR"
    p.write_text(
        'SYSTEM = "a; b # not a comment"\n'
        "  potim = 1.5d0   ! Fortran exponent\n"
        "# POTIM = 99\n"
        "NBLOCK = 4; TEBEG = 500 ; TEEND = 500\n"
        "MAGMOM = 1 1 \\\n 1 1\n"
        "POTIM = 7\n"
    )
    info = read_incar(p)
    assert info["tags"]["SYSTEM"] == "a; b # not a comment"
    assert info["POTIM"] == 1.5 and info["NBLOCK"] == 4
    assert info["timestep_fs"] == 6.0 and info["temperature_K"] == 500.0
    assert info["tags"]["MAGMOM"].split() == ["1", "1", "1", "1"]
    assert any("POTIM given again" in w for w in info["warnings"])


def test_incar_bad_values_warn(tmp_path):
    p = tmp_path / "INCAR"
    p.write_text("POTIM = fast\nNBLOCK = 10\nTEBEG = 300\nTEEND = 600\nIBRION = 2\n")
    info = read_incar(p)
    assert info["timestep_fs"] is None
    text = " ".join(info["warnings"])
    assert "line 1: POTIM = 'fast'" in text and "ramps" in text and "IBRION = 2" in text
    p.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(InputError, match="binary"):
        read_incar(p)


@needs_iondiff_tests
def test_iondiff_incar_cases():
    both = read_incar(IONDIFF_TESTS / "INCAR_both_ok" / "INCAR")
    assert both["timestep_fs"] == pytest.approx(15.0)  # POTIM 1.5 x NBLOCK 10
    assert both["temperature_K"] is None  # TEBEG = XXX.X
    assert any("TEBEG = 'XXX.X'" in w for w in both["warnings"])
    no_potim = read_incar(IONDIFF_TESTS / "INCAR_POTIM_missing" / "INCAR")
    assert no_potim["timestep_fs"] is None and no_potim["NBLOCK"] == 10
    assert any("no POTIM" in w for w in no_potim["warnings"])
    no_nblock = read_incar(IONDIFF_TESTS / "INCAR_NBLOCK_missing" / "INCAR")
    assert no_nblock["timestep_fs"] == pytest.approx(1.5)  # VASP default NBLOCK = 1
    assert any("no NBLOCK" in w for w in no_nblock["warnings"])


@needs_iondiff_tests
def test_iondiff_xdatcar_cases():
    ok = read_trajectory(IONDIFF_TESTS / "XDATCAR_ok")
    assert ok.n_frames == 2 and ok.n_atoms == 382
    assert ok.composition == {"Li": 110, "La": 48, "Zr": 32, "O": 192}
    np.testing.assert_allclose(ok.cells[0], np.diag([13.2, 13.2, 25.3]))
    assert ok.timestep_fs == pytest.approx(15.0) and ok.temperature_K is None
    expected = {
        "XDATCAR_cell_wrong": "line 3: the cell vector must be three numbers, got 'cell 0.0  0.0'",
        "XDATCAR_composition_wrong": "line 6: 11 species names",
        "XDATCAR_pos_wrong": "line 390: frame 1 ends after 381 of 382 atom lines",
        "XDATCAR_scale_wrong": "line 2: the scale factor must be one number (or three), got 'scale'",
    }
    for case, text in expected.items():
        with pytest.raises(InputError) as e:
            read_trajectory(IONDIFF_TESTS / case)
        assert text in str(e.value) and case in str(e.value)


# --------------------------------------------------------------------------- real data
@needs_real
def test_li6ps5cl_real_run():
    tr = read_trajectory(REAL / "Li6PS5Cl_500K_50p_run1")
    assert tr.positions_frac.shape == (140, 416, 3)
    assert tr.timestep_fs == pytest.approx(100.0) and tr.temperature_K == pytest.approx(500.0)
    assert tr.composition == {"Li": 192, "Cl": 32, "S": 160, "P": 32}
    assert tr.warnings == [] and not tr.variable_cell
    assert tr.cells[0][0, 0] == pytest.approx(20.312311)


@needs_real
def test_lgps_pymatgen_species_labels():
    tr = read_trajectory(REAL / "LGPS_600K")
    assert tr.positions_frac.shape == (1000, 50, 3)
    assert tr.timestep_fs == pytest.approx(20.0)  # POTIM 2.0 x NBLOCK 10
    assert tr.temperature_K == pytest.approx(600.0)
    assert tr.composition == {"Li": 20, "Ge": 2, "P": 4, "S": 24}
    np.testing.assert_allclose(tr.positions_frac[0, 0], [0.279856, 0.189943, 0.400929])


@needs_real
def test_real_matches_ase(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    src = REAL / "Na3PS4_800K" / "XDATCAR.gz"
    tr = read_xdatcar(src)
    # ASE rejects the label column: strip it for the comparison.
    text = gzip.decompress(src.read_bytes()).decode().split("\n")
    plain = "\n".join(text[:8] + [" ".join(line.split()[:3]) if line[:1] != "D" else line for line in text[8:]])
    p = write(tmp_path, plain)
    frames = ase_io.read(p, index=":", format="vasp-xdatcar")
    ref = np.array([a.get_scaled_positions(wrap=False) for a in frames])
    np.testing.assert_allclose(tr.positions_frac, ref, atol=1e-12)
    np.testing.assert_allclose(tr.cells[0], frames[0].cell.array, atol=1e-12)


@needs_real
def test_extxyz_through_ase():
    path = REAL / "Li7P3S11_extxyz" / "LiPS.exyz.xz"
    tr = read_trajectory(path, timestep_fs=20)
    assert tr.positions_frac.shape == (200, 2688, 3)
    assert tr.composition == {"Li": 896, "P": 384, "S": 1408}
    assert tr.timestep_fs == 20.0
    assert np.isfinite(tr.positions_frac).all()
    assert tr.cells.shape == (200, 3, 3)
    assert abs(np.linalg.det(tr.cells[0])) > 1000


@needs_real
def test_sniff_species_on_gz():
    assert sniff_species(REAL / "Li6PS5Cl_500K_50p_run1" / "XDATCAR.gz") == ["Li", "Cl", "S", "P"]
    assert sniff_species(REAL / "LGPS_600K") == ["Li", "Ge", "P", "S"]
    assert sniff_species(REAL / "Li7P3S11_extxyz" / "LiPS.exyz.xz") == ["Li", "P", "S"]


@needs_real
def test_find_simulations_real():
    found = find_simulations(REAL)
    names = {p.name for p in found}
    assert len(found) == 21
    assert {"LGPS_600K", "Na3PS4_800K", "Li6PS5Cl_500K_50p_run1", "LiPS.exyz.xz"} <= names
    assert all(p.is_dir() for p in found if p.name != "LiPS.exyz.xz")
    for p in found[:3]:
        assert sniff_species(p)


def test_find_simulations_layouts(tmp_path):
    traj = make_traj()
    (tmp_path / "a").mkdir()
    write_xdatcar(traj, tmp_path / "a" / "XDATCAR.bz2")
    (tmp_path / "b" / "deep").mkdir(parents=True)
    write_xdatcar(traj, tmp_path / "b" / "deep" / "XDATCAR_600K")
    write_xdatcar(traj, tmp_path / "b" / "deep" / "XDATCAR_700K")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "XDATCAR").write_text("")  # empty: skipped
    (tmp_path / ".hidden").mkdir()
    write_xdatcar(traj, tmp_path / ".hidden" / "XDATCAR")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "XDATCAR").write_text("garbage\n")
    found = find_simulations(tmp_path)
    rel = [str(p.relative_to(tmp_path)) for p in found]
    assert rel == ["a", "b/deep/XDATCAR_600K", "b/deep/XDATCAR_700K", "d"]
    assert [str(p.relative_to(tmp_path)) for p in find_simulations(tmp_path, check=True)] == rel[:3]


# --------------------------------------------------------------------------- ASE formats
def test_extxyz_round_trip_with_time(tmp_path):
    ase = pytest.importorskip("ase")
    from ase.io import write as ase_write

    traj = make_traj(n_frames=5, variable=True)
    frames = []
    for t in range(traj.n_frames):
        a = ase.Atoms(traj.species, scaled_positions=traj.positions_frac[t], cell=traj.cells[t], pbc=True)
        a.info["time"] = 4.0 * t
        frames.append(a)
    p = tmp_path / "run.extxyz"
    ase_write(p, frames, format="extxyz")
    with open(p, "rb") as f, lzma.open(tmp_path / "run.exyz.xz", "wb") as g:
        shutil.copyfileobj(f, g)
    for path in (p, tmp_path / "run.exyz.xz"):
        back = read_trajectory(path)
        assert_same(traj, back, atol=1e-8)
        assert back.timestep_fs == pytest.approx(4.0)
    assert sniff_species(tmp_path / "run.exyz.xz") == ["Li", "P", "S"]


def test_ase_frame_without_cell_is_refused(tmp_path):
    ase = pytest.importorskip("ase")
    from ase.io import write as ase_write

    ase_write(tmp_path / "mol.extxyz", [ase.Atoms("H2O", positions=np.eye(3))] * 2, format="extxyz")
    with pytest.raises(InputError, match="frame 1 has no periodic 3D cell"):
        read_trajectory(tmp_path / "mol.extxyz")


def test_ase_truncated_last_frame(tmp_path):
    ase = pytest.importorskip("ase")
    from ase.io import write as ase_write

    traj = make_traj(n_frames=6)
    frames = [ase.Atoms(traj.species, scaled_positions=x, cell=CELL, pbc=True) for x in traj.positions_frac]
    p = tmp_path / "run.extxyz"
    ase_write(p, frames, format="extxyz")
    p.write_bytes(p.read_bytes()[:-200])
    back = read_trajectory(p, timestep_fs=1.0)
    assert back.n_frames == 5
    assert any("dropped incomplete last frame 6" in w for w in back.warnings)


def test_lammps_dump(tmp_path):
    traj = make_traj(n_frames=3)
    # An orthorhombic box keeps the dump simple.
    box = np.diag(np.diag(CELL))
    cart = traj.positions_frac @ box
    lines = []
    for t in range(3):
        lines += [
            "ITEM: TIMESTEP", str(t * 100), "ITEM: NUMBER OF ATOMS", str(traj.n_atoms),
            "ITEM: BOX BOUNDS pp pp pp", f"0 {box[0, 0]}", f"0 {box[1, 1]}", f"0 {box[2, 2]}",
            "ITEM: ATOMS id element x y z",
        ]
        lines += [f"{i + 1} {s} {x:.8f} {y:.8f} {z:.8f}" for i, (s, (x, y, z)) in enumerate(zip(traj.species, cart[t]))]
    p = tmp_path / "run.lammpstrj"
    p.write_text("\n".join(lines) + "\n")
    back = read_trajectory(p, timestep_fs=1.0)
    assert back.species == SPECIES
    np.testing.assert_allclose(back.positions_frac, traj.positions_frac, atol=1e-7)
    assert sniff_species(p) == ["Li", "P", "S"]


def test_synthetic_round_trip(tmp_path):
    from iondiff_core.synthetic import make_synthetic

    traj = make_synthetic(seed=3).trajectory
    back = read_trajectory(write_xdatcar(traj, tmp_path / "XDATCAR.gz", write_incar=True).parent)
    assert_same(traj, back, atol=5e-9)
    assert back.timestep_fs == pytest.approx(traj.timestep_fs)


def test_damaged_compressed_file_is_refused_unless_allowed(tmp_path):
    from iondiff_core.io import read_trajectory

    traj = make_traj(n_frames=200)
    data = gzip.compress(xdatcar_text(traj).encode())
    path = write(tmp_path, data[: len(data) * 2 // 3], "XDATCAR.gz")
    with pytest.raises(InputError, match="stream ends early .* the file is damaged"):
        read_trajectory(path, timestep_fs=1.0)
    back = read_trajectory(path, timestep_fs=1.0, allow_truncated=True)
    assert 0 < back.n_frames < 200 and any(w.startswith("DAMAGED FILE") for w in back.warnings)
