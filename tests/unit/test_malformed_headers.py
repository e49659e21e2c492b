"""Every malformed header is a clean exit 2 whose one-line message names the file and
the line (never exit 3, "unexpected ZeroDivisionError"), in every text format."""

import pytest

from iondiff_core.cli import main

LATTICE = ("10.0 0.0 0.0", "0.0 10.0 0.0", "0.0 0.0 10.0")
COORDS = ("0.1 0.1 0.1", "0.5 0.5 0.5", "0.2 0.7 0.3")


def xdatcar(scale="1.0", lattice=LATTICE, species="Li S", counts="2 1", coords=COORDS, frames=40,
            marker="Direct configuration="):
    lines = ["title", scale, *lattice, species, counts]
    for t in range(frames):
        lines += [f"{marker} {t + 1}", *coords]
    return "\n".join(lines) + "\n"


def lammps(n="3", box=("0 10", "0 10", "0 10"), bounds="pp pp pp", rows=None, frames=40):
    lines = []
    for t in range(frames):
        lines += ["ITEM: TIMESTEP", str(t), "ITEM: NUMBER OF ATOMS", n, f"ITEM: BOX BOUNDS {bounds}", *box,
                  "ITEM: ATOMS id type x y z", *(rows or ("1 1 1 5 5", "2 1 2 5 5", "3 2 3 5 5"))]
    return "\n".join(lines) + "\n"


def extxyz(n="3", lattice="10 0 0 0 10 0 0 0 10", coords=("Li 1 5 5", "Li 2 5 5", "S 3 5 5"), frames=40):
    lines = []
    for t in range(frames):
        lines += [n, f'Lattice="{lattice}" Properties=species:S:1:pos:R:3', *coords]
    return "\n".join(lines) + "\n"


CASES = {
    # name: (file name, text, words the message must hold after "<file> line(s) N")
    "cell 1e150 A": ("XDATCAR", xdatcar(lattice=("1e150 0 0", "0 10 0", "0 0 10")), "lines 2-5: a cell vector is 1e+150 Å"),
    "cell 1e-150 A": ("XDATCAR", xdatcar(lattice=("1e-150 0 0", "0 1e-150 0", "0 0 1e-150")), "lines 2-5: a cell vector is 1e-150 Å"),
    "scale 1e300": ("XDATCAR", xdatcar(scale="1e300"), "lines 2-5: a cell vector is inf Å"),
    "scale -1e-300": ("XDATCAR", xdatcar(scale="-1e-300"), "lines 2-5: a cell vector is 1e-100 Å"),
    "scale -1e300": ("XDATCAR", xdatcar(scale="-1e300"), "lines 2-5: a cell vector is 1e+100 Å"),
    "scale 1e-300": ("XDATCAR", xdatcar(scale="1e-300"), "lines 2-5: a cell vector is 0 Å"),
    "scale 0": ("XDATCAR", xdatcar(scale="0"), "line 2: invalid scale factor '0'"),
    "scale nan": ("XDATCAR", xdatcar(scale="nan"), "line 2: the scale factor must be one number"),
    "three scales 1e300": ("XDATCAR", xdatcar(scale="1e300 1 1"), "lines 2-5: a cell vector is inf Å"),
    "cell nan": ("XDATCAR", xdatcar(lattice=("nan 0 0", "0 10 0", "0 0 10")), "line 3: the cell vector must be three numbers"),
    "cell inf": ("XDATCAR", xdatcar(lattice=("0 0 10", "0 inf 0", "0 0 10")), "line 4: the cell vector must be three numbers"),
    "flat cell": ("XDATCAR", xdatcar(lattice=("10 0 0", "10 1e-10 0", "0 0 10")), "line 3: the cell vectors are linearly dependent"),
    "cartesian 1e150 cell": ("XDATCAR", xdatcar(lattice=("1e150 0 0", "0 1e150 0", "0 0 1e150"), marker="Cartesian configuration="),
                             "lines 2-5: a cell vector is 1e+150 Å"),
    "coordinate nan": ("XDATCAR", xdatcar(coords=("nan 0.1 0.1", *COORDS[1:])), "line 9: non-finite coordinate 'nan'"),
    "coordinate inf": ("XDATCAR", xdatcar(coords=(*COORDS[:2], "0.2 -inf 0.3")), "line 11: non-finite coordinate '-inf'"),
    "coordinate 1e300": ("XDATCAR", xdatcar(coords=("1e300 0.1 0.1", *COORDS[1:])), "line 9: coordinate beyond ±1e+08"),
    "negative count": ("XDATCAR", xdatcar(counts="-2 1"), "line 7: invalid atom counts '-2 1'"),
    "zero counts": ("XDATCAR", xdatcar(counts="0 0"), "line 7: invalid atom counts '0 0'"),
    "counts vs species": ("XDATCAR", xdatcar(counts="2 1 1"), "line 6: 2 species names ('Li S') for 3 atom counts"),
    "species vs counts": ("XDATCAR", xdatcar(species="Li S P"), "line 6: 3 species names ('Li S P') for 2 atom counts"),
    "absurd atom count": ("XDATCAR", xdatcar(counts="99999999999999999999 1"), "line 7: the header claims 100,000,000,000,000,000,000 atoms"),
    "too many atoms for the frame": ("XDATCAR", xdatcar(counts="3 1"), "line 12: frame 1 ends after 3 of 4 atom lines"),
    "fractional count": ("XDATCAR", xdatcar(counts="2.0 1"), "line 7: the atom counts must be whole numbers"),
    "lammps box 1e150": ("run.lammpstrj", lammps(box=("0 1e150", "0 10", "0 10")), "line 6: frame 1: a cell vector is 1e+150 Å"),
    "lammps box nan": ("run.lammpstrj", lammps(box=("0 nan", "0 10", "0 10")), "line 6: frame 1 has a zero-volume box"),
    "lammps hi below lo": ("run.lammpstrj", lammps(box=("10 0", "0 10", "0 10")), "line 6: frame 1 has a zero-volume box"),
    "lammps tilt 1e150": ("run.lammpstrj", lammps(box=("0 10 1e150", "0 10 0", "0 10 0"), bounds="xy xz yz pp pp pp"),
                          "line 6: frame 1 has a zero-volume box"),
    "lammps absurd atoms": ("run.lammpstrj", lammps(n="99999999999999999999"), "line 4: 99999999999999999999 atoms"),
    "lammps negative atoms": ("run.lammpstrj", lammps(n="-3"), "line 4: -3 atoms"),
    "lammps coordinate 1e300": ("run.lammpstrj", lammps(rows=("1 1 1e300 5 5", "2 1 2 5 5", "3 2 3 5 5")),
                                "line 10: '1e300' is beyond ±1e+15"),
    "extxyz lattice 1e150": ("run.extxyz", extxyz(lattice="1e150 0 0 0 10 0 0 0 10"), "line 2: frame 1: a cell vector is 1e+150 Å"),
    "extxyz lattice nan": ("run.extxyz", extxyz(lattice="nan 0 0 0 10 0 0 0 10"), "line 2: frame 1: the cell holds non-finite"),
    "extxyz absurd atoms": ("run.extxyz", extxyz(n="99999999999999999999"), "line 1: 99999999999999999999 atoms"),
    "extxyz coordinate 1e300": ("run.extxyz", extxyz(coords=("Li 1e300 5 5", "Li 2 5 5", "S 3 5 5")),
                                "line 3: '1e300' is beyond ±1e+15"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_malformed_header_exits_2_naming_file_and_line(case, tmp_path, capsys):
    name, text, expected = CASES[case]
    path = tmp_path / name
    path.write_text(text)
    argv = ["analyze", str(path), "-q", "--jobs", "1", "--timestep-fs", "10", "--temperature", "600"]
    if name.endswith(".lammpstrj"):
        argv += ["--type-map", "1=Li,2=S"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {path} ")
    assert expected in err, err


def test_vasprun_and_h5md_cells_and_values(tmp_path, capsys):
    """The binary and XML formats: implausible cells exit 2 naming the step or frame;
    an implausible stored temperature or timestep is ignored with a warning."""
    import numpy as np

    from iondiff_core.io import read_trajectory
    from test_io_formats import npt_run, vasprun_text, write_h5md  # the formats' own writers

    u, cells = npt_run(big_steps=False)
    for scale, words in ((1e150, "ionic step 1: a cell vector is 1.11e+151 Å"), (np.nan, "ionic step 1: the cell holds non-finite")):
        p = tmp_path / f"vr{scale}" / "vasprun.xml"
        p.parent.mkdir()
        with np.errstate(all="ignore"):
            p.write_text(vasprun_text(u, cells * scale))
        assert main(["analyze", str(p), "-q"]) == 2
        assert f"error: {p}: {words}" in capsys.readouterr().err
    h5 = tmp_path / "big.h5md"
    write_h5md(h5, u, cells * 1e150)
    assert main(["analyze", str(h5), "-q", "--type-map", "1=Li,2=P,3=S"]) == 2
    assert f"error: {h5}: box/edges of frame 1: a cell vector is" in capsys.readouterr().err
    for kw, attr in (({"tebeg": 1e308}, "temperature_K"), ({"potim": 1e30}, "timestep_fs")):
        p = tmp_path / attr / "vasprun.xml"
        p.parent.mkdir()
        p.write_text(vasprun_text(u, cells, **kw))
        traj = read_trajectory(p)
        assert getattr(traj, attr) is None
        assert any("not plausible" in w and f"give {attr}" in w for w in traj.warnings)
