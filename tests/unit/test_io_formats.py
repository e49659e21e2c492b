"""Streaming readers of the formats MLIP MD writes: LAMMPS dump, extxyz, ASE .traj, H5MD,
vasprun.xml; mobile-only float32 reading; bad input at scale.

Every test writes its own small file with known positions (an NPT run: a skewed cell that
changes every frame, ions that move more than half a box between frames, so only exact
unwrapping recovers them) and checks what comes back.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from iondiff_core.errors import InputError
from iondiff_core.io import read_trajectory, sniff_species, write_xdatcar
from iondiff_core.trajectory import Trajectory, unwrap

SPECIES = ["Li"] * 5 + ["P"] * 2 + ["S"] * 6
TYPES = {"Li": 1, "P": 2, "S": 3}
TYPE_MAP = "1=Li,2=P,3=S"


def npt_run(n_frames=9, seed=0, big_steps=True):
    """Unwrapped fractional positions u (T, N, 3) and triclinic cells (T, 3, 3) in Å.

    Li ions jump up to 0.8 box lengths per frame (only image flags can unwrap that);
    the framework vibrates and drifts slowly.
    """
    rng = np.random.default_rng(seed)
    T, N = n_frames, len(SPECIES)
    base = np.array([[9.0, 0.0, 0.0], [1.2, 10.0, 0.0], [-0.8, 0.6, 11.0]])
    cells = base[None] * (1 + 0.03 * rng.standard_normal((T, 1, 1)))
    cells[:, 1, 0] += 0.1 * rng.standard_normal(T)  # tilt changes too
    u = np.empty((T, N, 3))
    u[0] = rng.random((N, 3))
    li = np.array([s == "Li" for s in SPECIES])
    for t in range(1, T):
        step = rng.normal(0, 0.01, (N, 3))
        step[li] = rng.uniform(-0.8, 0.8, (li.sum(), 3)) if big_steps else rng.normal(0, 0.05, (li.sum(), 3))
        step[~li] += 0.002  # framework drift
        u[t] = u[t - 1] + step
    return u, cells


def cart_truth(u, cells):
    return np.einsum("tnj,tjk->tnk", u, cells)


# --------------------------------------------------------------------------- LAMMPS
def lammps_bounds(cell, origin):
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = cell
    xlo, ylo, zlo = origin
    xlo_b = xlo + min(0.0, xy, xz, xy + xz)
    xhi_b = xlo + lx + max(0.0, xy, xz, xy + xz)
    ylo_b = ylo + min(0.0, yz)
    yhi_b = ylo + ly + max(0.0, yz)
    return [f"{xlo_b:.10f} {xhi_b:.10f} {xy:.10f}", f"{ylo_b:.10f} {yhi_b:.10f} {xz:.10f}", f"{zlo:.10f} {zlo + lz:.10f} {yz:.10f}"]


def lammps_dump(u, cells, style, shuffle=True, seed=1, counts=None):
    """Text of a triclinic NPT dump. style: 'scaled-image', 'wrapped-image', 'unwrapped', 'wrapped', 'element'."""
    rng = np.random.default_rng(seed)
    T, N, _ = u.shape
    origin = np.array([-1.5, 0.5, 2.0])
    cols = {
        "scaled-image": "id type xs ys zs ix iy iz",
        "wrapped-image": "id type x y z ix iy iz",
        "unwrapped": "id type xu yu zu",
        "wrapped": "id type x y z",
        "element": "id element x y z ix iy iz",
    }[style]
    out = []
    for t in range(T):
        n = N if counts is None else counts[t]
        img = np.floor(u[t])
        w = u[t] - img
        cart_w = origin + w @ cells[t]
        cart_u = origin + u[t] @ cells[t]
        out += ["ITEM: TIMESTEP", str(t * 50), "ITEM: NUMBER OF ATOMS", str(n), "ITEM: BOX BOUNDS xy xz yz pp pp pp"]
        out += lammps_bounds(cells[t], origin)
        out.append(f"ITEM: ATOMS {cols}")
        order = rng.permutation(N) if shuffle else np.arange(N)
        for i in order[:n]:
            s = SPECIES[i]
            ix, iy, iz = img[i].astype(int)
            if style == "scaled-image":
                out.append(f"{i + 1} {TYPES[s]} {w[i, 0]:.10f} {w[i, 1]:.10f} {w[i, 2]:.10f} {ix} {iy} {iz}")
            elif style == "wrapped-image":
                out.append(f"{i + 1} {TYPES[s]} {cart_w[i, 0]:.10f} {cart_w[i, 1]:.10f} {cart_w[i, 2]:.10f} {ix} {iy} {iz}")
            elif style == "element":
                out.append(f"{i + 1} {s} {cart_w[i, 0]:.10f} {cart_w[i, 1]:.10f} {cart_w[i, 2]:.10f} {ix} {iy} {iz}")
            elif style == "unwrapped":
                out.append(f"{i + 1} {TYPES[s]} {cart_u[i, 0]:.10f} {cart_u[i, 1]:.10f} {cart_u[i, 2]:.10f}")
            else:
                out.append(f"{i + 1} {TYPES[s]} {cart_w[i, 0]:.10f} {cart_w[i, 1]:.10f} {cart_w[i, 2]:.10f}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("style", ["scaled-image", "wrapped-image", "unwrapped", "element"])
def test_lammps_triclinic_npt_unwrapped_exactly(tmp_path, style):
    u, cells = npt_run()
    p = tmp_path / "dump.lammpstrj"
    p.write_text(lammps_dump(u, cells, style))
    tm = None if style == "element" else TYPE_MAP
    tr = read_trajectory(p, timestep_fs=2.0, type_map=tm)
    assert tr.species == SPECIES and tr.unwrapped
    np.testing.assert_allclose(tr.cells, cells, atol=1e-8)
    # Jumps of up to 0.8 box lengths: only the image flags (or xu) recover them.
    np.testing.assert_allclose(unwrap(tr), cart_truth(u, cells), atol=1e-6)
    assert sniff_species(p, type_map=tm) == ["Li", "P", "S"]


def test_lammps_wrapped_without_images_folds_small_steps(tmp_path):
    u, cells = npt_run(big_steps=False)
    p = tmp_path / "run.dump"
    p.write_text(lammps_dump(u, cells, "wrapped", shuffle=False))
    tr = read_trajectory(p, type_map={1: "Li", 2: "P", 3: "S"})
    assert not tr.unwrapped
    np.testing.assert_allclose(tr.positions_frac, u - np.floor(u), atol=1e-8)
    expect = cart_truth(u, cells)
    # Folded steps converted with the arriving frame's cell: the same as the truth up to
    # the cell change times the position, i.e. exact at frame 0 and close afterwards.
    np.testing.assert_allclose(unwrap(tr)[0], expect[0], atol=1e-8)
    assert np.abs(unwrap(tr) - expect).max() < 1.0
    assert any("time between frames is unknown" in w for w in tr.warnings)


def test_lammps_type_map_errors_and_default(tmp_path):
    u, cells = npt_run(n_frames=3)
    p = tmp_path / "dump.lammpstrj"
    p.write_text(lammps_dump(u, cells, "unwrapped"))
    with pytest.raises(InputError, match="does not name atom type"):
        read_trajectory(p, type_map="1=Li,2=P")
    with pytest.raises(InputError, match="TYPE=Element"):
        read_trajectory(p, type_map="1:Li")
    tr = read_trajectory(p)  # types read as atomic numbers, with a warning
    assert tr.symbols == ["H", "He", "Li"]
    assert any("type map" in w for w in tr.warnings)
    tr = read_trajectory(p, species=["Li", "P", "S"])  # the old per-type list still works
    assert tr.species == SPECIES


def test_lammps_gzip_and_small_chunks(tmp_path):
    from iondiff_core.io import read_lammps_dump

    u, cells = npt_run(n_frames=20)
    text = lammps_dump(u, cells, "scaled-image")
    p = tmp_path / "dump.lammpstrj.gz"
    p.write_bytes(gzip.compress(text.encode()))
    a = read_trajectory(p, type_map=TYPE_MAP)
    b = read_lammps_dump(p, TYPE_MAP, chunk_bytes=2000)  # many chunks, frames split across reads
    np.testing.assert_array_equal(a.positions_frac, b.positions_frac)
    assert a.n_frames == 20


def test_lammps_truncated_keeps_complete_frames(tmp_path):
    u, cells = npt_run(n_frames=6)
    text = lammps_dump(u, cells, "scaled-image")
    p = tmp_path / "dump.lammpstrj"
    p.write_text(text[: len(text) - 150])  # cut inside frame 6's atom lines, mid-line
    tr = read_trajectory(p, type_map=TYPE_MAP)
    assert tr.n_frames == 5
    assert any("dropped incomplete last frame 6" in w and "ends mid-frame" in w for w in tr.warnings)
    np.testing.assert_allclose(unwrap(tr), cart_truth(u, cells)[:5], atol=1e-6)
    # Cut inside the header of frame 4.
    cut = text.index("ITEM: TIMESTEP\n150") + 30
    p.write_text(text[:cut])
    tr = read_trajectory(p, type_map=TYPE_MAP)
    assert tr.n_frames == 3 and any("dropped incomplete last frame 4" in w for w in tr.warnings)


def test_lammps_only_a_partial_frame_is_an_error(tmp_path):
    u, cells = npt_run(n_frames=2)
    text = lammps_dump(u, cells, "scaled-image")
    p = tmp_path / "dump.lammpstrj"
    p.write_text(text[:400])
    with pytest.raises(InputError, match="no complete frame"):
        read_trajectory(p, type_map=TYPE_MAP)


@pytest.mark.parametrize("last", [False, True])
def test_lammps_atom_count_change_names_the_frame(tmp_path, last):
    u, cells = npt_run(n_frames=5)
    N = len(SPECIES)
    counts = [N] * 5
    counts[4 if last else 2] = N - 1
    p = tmp_path / "dump.lammpstrj"
    p.write_text(lammps_dump(u, cells, "scaled-image", counts=counts))
    frame = 5 if last else 3
    with pytest.raises(InputError, match=f"frame {frame} has {N - 1} atoms, frame 1 had {N}"):
        read_trajectory(p, type_map=TYPE_MAP)


def test_lammps_bad_atom_line_names_the_line(tmp_path):
    u, cells = npt_run(n_frames=4)
    lines = lammps_dump(u, cells, "unwrapped", shuffle=False).split("\n")
    bad = 2 * (9 + len(SPECIES)) + 9 + 3  # frame 3, fourth atom line (0-based index)
    lines[bad] = lines[bad].replace(" ", " x", 1)
    p = tmp_path / "dump.lammpstrj"
    p.write_text("\n".join(lines))
    with pytest.raises(InputError, match=f"line {bad + 1}: .*frame 3"):
        read_trajectory(p, type_map=TYPE_MAP)


def test_lammps_changed_ids_are_refused(tmp_path):
    u, cells = npt_run(n_frames=3)
    text = lammps_dump(u, cells, "unwrapped", shuffle=False)
    head, sep, rest = text.rpartition("ITEM: ATOMS id type xu yu zu\n1 ")
    p = tmp_path / "dump.lammpstrj"
    p.write_text(head + sep.replace("\n1 ", "\n99 ") + rest)
    with pytest.raises(InputError, match="frame 3 holds other atom ids"):
        read_trajectory(p, type_map=TYPE_MAP)


# --------------------------------------------------------------------------- extxyz
def extxyz_text(u, cells, dt=None, extra=True, counts=None):
    T, N, _ = u.shape
    out = []
    props = "species:S:1:pos:R:3" + (":forces:R:3" if extra else "")
    for t in range(T):
        n = N if counts is None else counts[t]
        cart = (u[t] - np.floor(u[t])) @ cells[t]
        lat = " ".join(f"{x:.10f}" for x in cells[t].ravel())
        info = f" time={t * dt:.4f}" if dt else ""
        out.append(str(n))
        out.append(f'Lattice="{lat}" Properties={props} energy=-1.5{info} pbc="T T T"')
        for i in range(n):
            f = " 0.1 -0.2 0.3" if extra else ""
            out.append(f"{SPECIES[i]:2s} {cart[i, 0]:16.10f} {cart[i, 1]:16.10f} {cart[i, 2]:16.10f}{f}")
    return "\n".join(out) + "\n"


def test_extxyz_fast_path_npt_matches_ase(tmp_path):
    from iondiff_core.io import read_ase

    u, cells = npt_run(big_steps=False)
    p = tmp_path / "md.extxyz"
    p.write_text(extxyz_text(u, cells, dt=0.5))
    tr = read_trajectory(p)
    assert tr.species == SPECIES and tr.timestep_fs == pytest.approx(0.5)
    np.testing.assert_allclose(tr.positions_frac, u - np.floor(u), atol=1e-8)
    np.testing.assert_allclose(tr.cells, cells, atol=1e-9)
    ref = read_ase(p)
    np.testing.assert_allclose(tr.positions_frac, ref.positions_frac, atol=1e-9)
    np.testing.assert_allclose(tr.cells, ref.cells, atol=1e-12)
    assert sniff_species(p) == ["Li", "P", "S"]


def test_extxyz_any_chunk_boundary(tmp_path):
    """A chunk that ends just after a frame's last newline plus part of the next line
    (e.g. the "1" of "14") must not lose that part (it did: "frame 746 has 4 atoms")."""
    from iondiff_core.io.extxyz import read_extxyz

    u, cells = npt_run(n_frames=9, big_steps=False)
    p = tmp_path / "md.extxyz"
    p.write_text(extxyz_text(u, cells))
    ref = read_extxyz(p, None)
    frame = len(p.read_bytes()) // 9
    for cb in range(frame - 3, 3 * frame + 3):  # every boundary offset within a frame
        t = read_extxyz(p, None, chunk_bytes=cb)
        assert t.n_frames == 9, cb
        np.testing.assert_array_equal(t.positions_frac, ref.positions_frac)


def test_extxyz_truncated_and_count_change(tmp_path):
    u, cells = npt_run(n_frames=5)
    text = extxyz_text(u, cells)
    p = tmp_path / "md.extxyz"
    p.write_text(text[:-100])
    tr = read_trajectory(p, timestep_fs=1)
    assert tr.n_frames == 4 and any("dropped incomplete last frame 5" in w for w in tr.warnings)
    N = len(SPECIES)
    p.write_text(extxyz_text(u, cells, counts=[N, N, N - 1, N, N]))
    with pytest.raises(InputError, match=f"frame 3 has {N - 1} atoms, frame 1 had {N}"):
        read_trajectory(p)


def test_extxyz_frame_without_lattice(tmp_path):
    u, cells = npt_run(n_frames=3)
    text = extxyz_text(u, cells).split("\n")
    L = len(SPECIES) + 2
    text[2 * L + 1] = text[2 * L + 1].split(" Properties")[0].replace("Lattice", "Latt") + " Properties=species:S:1:pos:R:3:forces:R:3"
    p = tmp_path / "md.extxyz"
    p.write_text("\n".join(text))
    with pytest.raises(InputError, match=f"line {2 * L + 2}: frame 3 has no periodic 3D cell"):
        read_trajectory(p)


# --------------------------------------------------------------------------- ASE .traj
def test_ase_traj_npt(tmp_path):
    ase = pytest.importorskip("ase")
    from ase.io import Trajectory as AseTrajectory

    u, cells = npt_run()
    p = tmp_path / "md.traj"
    with AseTrajectory(str(p), "w") as w:
        for t in range(len(u)):
            w.write(ase.Atoms(SPECIES, scaled_positions=u[t] - np.floor(u[t]), cell=cells[t], pbc=True))
    tr = read_trajectory(p, timestep_fs=1.0)
    assert tr.species == SPECIES
    np.testing.assert_allclose(tr.positions_frac, u - np.floor(u), atol=1e-9)
    np.testing.assert_allclose(tr.cells, cells, atol=1e-12)
    assert sniff_species(p) == ["Li", "P", "S"]
    mob = read_trajectory(p, keep="mobile", dtype=np.float32)
    assert mob.positions_frac.dtype == np.float32 and mob.species == ["Li"] * 5


# --------------------------------------------------------------------------- H5MD
def write_h5md(p, u, cells, nm=True, images=True, types=True):
    h5py = pytest.importorskip("h5py")
    T = len(u)
    scale = 0.1 if nm else 1.0
    with h5py.File(p, "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
        g = f.create_group("particles/all")
        img = np.floor(u)
        pos = g.create_group("position")
        v = pos.create_dataset("value", data=np.einsum("tnj,tjk->tnk", u - img if images else u, cells) * scale)
        v.attrs["unit"] = "nm" if nm else "Angstrom"
        pos.create_dataset("step", data=np.arange(T) * 10)
        tds = pos.create_dataset("time", data=np.arange(T) * 0.02)
        tds.attrs["unit"] = "ps"
        if images:
            g.create_group("image").create_dataset("value", data=img.astype(np.int32))
        box = g.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        box.create_group("edges").create_dataset("value", data=cells * scale)
        if types:
            g.create_dataset("species", data=np.array([TYPES[s] for s in SPECIES], dtype=np.int32))
        else:
            g.create_dataset("species", data=np.array(SPECIES, dtype="S2"))


def test_h5md_npt_with_images(tmp_path):
    u, cells = npt_run()
    p = tmp_path / "md.h5md"
    write_h5md(p, u, cells)
    tr = read_trajectory(p, type_map=TYPE_MAP)
    assert tr.species == SPECIES and tr.unwrapped
    assert tr.timestep_fs == pytest.approx(20.0)  # 0.02 ps
    np.testing.assert_allclose(tr.cells, cells, atol=1e-9)
    np.testing.assert_allclose(unwrap(tr), cart_truth(u, cells), atol=1e-6)
    assert sniff_species(p, type_map=TYPE_MAP) == ["Li", "P", "S"]
    mob = read_trajectory(p, type_map=TYPE_MAP, keep="mobile", dtype=np.float32)
    np.testing.assert_allclose(unwrap(mob), cart_truth(u, cells)[:, :5], atol=1e-4)


def test_h5md_element_names_angstrom(tmp_path):
    u, cells = npt_run(big_steps=False)
    p = tmp_path / "md.h5"
    write_h5md(p, u, cells, nm=False, images=False, types=False)
    tr = read_trajectory(p)
    assert tr.species == SPECIES and not tr.unwrapped
    np.testing.assert_allclose(tr.positions_frac, u, atol=1e-9)


# --------------------------------------------------------------------------- vasprun.xml
def vasprun_text(u, cells, potim=2.0, tebeg=650.0):
    names = {"Li": "Li", "P": "P ", "S": "S "}
    atoms = "\n".join(f"    <rc><c>{names[s]}</c><c>   {TYPES[s]}</c></rc>" for s in SPECIES)

    def structure(t, name=""):
        basis = "\n".join(f"     <v> {a:14.8f} {b:14.8f} {c:14.8f} </v>" for a, b, c in cells[t])
        pos = "\n".join(f"    <v> {a:12.8f} {b:12.8f} {c:12.8f} </v>" for a, b, c in u[t] - np.floor(u[t]))
        nm = f' name="{name}"' if name else ""
        return (
            f"  <structure{nm}>\n   <crystal>\n    <varray name=\"basis\" >\n{basis}\n    </varray>\n"
            f"    <i name=\"volume\">  {abs(np.linalg.det(cells[t])):.4f} </i>\n   </crystal>\n"
            f"   <varray name=\"positions\" >\n{pos}\n   </varray>\n  </structure>\n"
        )

    calcs = "".join(
        f" <calculation>\n  <scstep><energy><i name=\"e_fr_energy\"> -1.0 </i></energy></scstep>\n{structure(t)}"
        f"  <varray name=\"forces\" >\n" + "\n".join("    <v> 0.0 0.0 0.0 </v>" for _ in SPECIES) + "\n  </varray>\n"
        f"  <energy><i name=\"e_fr_energy\"> -1.0 </i></energy>\n </calculation>\n"
        for t in range(len(u))
    )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>\n <generator><i name="program" type="string">vasp </i></generator>\n'
        f' <incar>\n  <i name="IBRION" type="int">     0</i>\n  <i name="POTIM">     {potim:.8f}</i>\n'
        f'  <i name="TEBEG">    {tebeg:.8f}</i>\n  <i type="int" name="NBLOCK">    10</i>\n </incar>\n'
        ' <parameters>\n  <separator name="ionic" >\n   <i name="POTIM">     9.0</i>\n  </separator>\n </parameters>\n'
        f" <atominfo>\n  <atoms>     {len(SPECIES)} </atoms>\n  <array name=\"atoms\" >\n   <set>\n{atoms}\n   </set>\n  </array>\n </atominfo>\n"
        + structure(0, "initialpos") + calcs + structure(len(u) - 1, "finalpos") + "</modeling>\n"
    )


def test_vasprun_npt(tmp_path):
    u, cells = npt_run(big_steps=False)
    p = tmp_path / "vasprun.xml"
    p.write_text(vasprun_text(u, cells))
    tr = read_trajectory(p)
    assert tr.species == SPECIES
    assert tr.timestep_fs == pytest.approx(2.0) and tr.temperature_K == pytest.approx(650.0)
    assert tr.n_frames == len(u)  # initialpos/finalpos are not frames
    np.testing.assert_allclose(tr.positions_frac, u - np.floor(u), atol=1e-8)
    np.testing.assert_allclose(tr.cells, cells, atol=1e-7)
    assert sniff_species(p) == ["Li", "P", "S"]
    # The same folder-level entry point finds it.
    assert read_trajectory(tmp_path).n_frames == len(u)


def test_vasprun_cut_mid_step_is_an_error_naming_the_step(tmp_path):
    u, cells = npt_run(n_frames=6)
    text = vasprun_text(u, cells)
    cut = [i for i in range(len(text)) if text.startswith("<calculation>", i)][3] + 400  # inside step 4
    p = tmp_path / "vasprun.xml"
    p.write_text(text[:cut])
    with pytest.raises(InputError, match="ends inside ionic step 4 .after 3 complete steps"):
        read_trajectory(p)


def test_vasprun_cut_between_steps_keeps_them(tmp_path):
    u, cells = npt_run(n_frames=6)
    text = vasprun_text(u, cells)
    cut = [i for i in range(len(text)) if text.startswith("</calculation>", i)][2] + len("</calculation>\n")
    p = tmp_path / "vasprun.xml"
    p.write_text(text[:cut])
    tr = read_trajectory(p)
    assert tr.n_frames == 3
    assert any("ends after ionic step 3" in w for w in tr.warnings)


# --------------------------------------------------------------------------- mobile only
def test_mobile_only_float32_every_reader(tmp_path):
    """keep='mobile' + float32 gives the mobile ions of the full read, and the framework drift."""
    u, cells = npt_run(n_frames=12, big_steps=False)
    files = {}
    files["dump"] = tmp_path / "dump.lammpstrj"
    files["dump"].write_text(lammps_dump(u, cells, "wrapped"))
    files["xyz"] = tmp_path / "md.extxyz"
    files["xyz"].write_text(extxyz_text(u, cells))
    files["xml"] = tmp_path / "vasprun.xml"
    files["xml"].write_text(vasprun_text(u, cells))
    traj = Trajectory(u - np.floor(u), cells, SPECIES)
    files["xdatcar"] = write_xdatcar(traj, tmp_path / "XDATCAR")
    li = np.arange(5)
    for name, p in files.items():
        full = read_trajectory(p, timestep_fs=1.0, type_map=TYPE_MAP if name == "dump" else None)
        mob = read_trajectory(p, timestep_fs=1.0, type_map=TYPE_MAP if name == "dump" else None,
                              keep="mobile", dtype=np.float32)
        assert mob.positions_frac.dtype == np.float32, name
        assert mob.positions_frac.shape == (12, 5, 3) and mob.species == ["Li"] * 5, name
        np.testing.assert_array_equal(mob.atom_indices, li)
        np.testing.assert_allclose(unwrap(mob), unwrap(full, li), atol=2e-5, err_msg=name)
        np.testing.assert_allclose(
            unwrap(mob, remove_drift=True), unwrap(full, li, remove_drift=True), atol=2e-5, err_msg=name
        )
        with pytest.raises(InputError, match="not in the file"):
            read_trajectory(p, type_map=TYPE_MAP if name == "dump" else None, keep="mobile", mobile="Na")


def test_mobile_only_other_species_and_indices(tmp_path):
    u, cells = npt_run(n_frames=4)
    p = tmp_path / "dump.lammpstrj"
    p.write_text(lammps_dump(u, cells, "scaled-image"))
    s = read_trajectory(p, type_map=TYPE_MAP, keep="mobile", mobile="S")
    assert s.species == ["S"] * 6
    np.testing.assert_array_equal(s.file_indices(np.arange(6)), np.arange(7, 13))
    np.testing.assert_allclose(unwrap(s), cart_truth(u, cells)[:, 7:], atol=1e-6)


def test_prepare_accepts_a_mobile_only_trajectory(tmp_path):
    from iondiff_core.parameters import Parameters
    from iondiff_core.pipeline import prepare

    u, cells = npt_run(n_frames=24, big_steps=False)
    p = tmp_path / "md.extxyz"
    p.write_text(extxyz_text(u, cells))
    for drift in (False, True):
        params = Parameters(species="Li", remove_drift=drift)
        full = prepare(read_trajectory(p, timestep_fs=1.0), params)
        mob = prepare(read_trajectory(p, timestep_fs=1.0, keep="mobile", dtype=np.float32), params)
        np.testing.assert_allclose(mob.positions_A, full.positions_A, atol=2e-5)
        assert full.positions_A.dtype == np.float64 and mob.positions_A.dtype == np.float32  # kept as read


# --------------------------------------------------------------------------- pipeline and CLI
def dump_of(traj: Trajectory, types: dict[str, int]) -> str:
    """A LAMMPS dump (xs ys zs, image flags) of a trajectory, in the LAMMPS form of its cell."""
    T = traj.n_frames
    cells = np.linalg.cholesky(np.einsum("tij,tkj->tik", traj.cells, traj.cells))  # same metric, lower triangular
    steps = np.diff(traj.positions_frac, axis=0)
    steps -= np.round(steps)  # the synthetic run is wrapped: image flags from its folded steps
    frac = traj.positions_frac[0] + np.concatenate([np.zeros((1,) + steps.shape[1:]), np.cumsum(steps, axis=0)])
    out = []
    for t in range(T):
        out += ["ITEM: TIMESTEP", str(t), "ITEM: NUMBER OF ATOMS", str(traj.n_atoms), "ITEM: BOX BOUNDS xy xz yz pp pp pp"]
        out += lammps_bounds(cells[t], np.zeros(3))
        out.append("ITEM: ATOMS id type xs ys zs ix iy iz")
        img = np.floor(frac[t]).astype(int)
        w = frac[t] - img
        out += [
            f"{i + 1} {types[s]} {w[i, 0]:.9f} {w[i, 1]:.9f} {w[i, 2]:.9f} {img[i, 0]} {img[i, 1]} {img[i, 2]}"
            for i, s in enumerate(traj.species)
        ]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def synthetic_dump(tmp_path_factory):
    from iondiff_core.synthetic import make_synthetic

    syn = make_synthetic(n_frames=2500, n_mobile=12, chain_sizes=(1, 2, 3, 1), seed=4)
    p = tmp_path_factory.mktemp("lmp") / "md.lammpstrj"
    p.write_text(dump_of(syn.trajectory, {"Li": 1, "S": 2}))
    return p, syn


def test_cli_type_map_reads_a_dump(synthetic_dump, tmp_path):
    import json

    from iondiff_core.cli import main
    from iondiff_core.synthetic import match_hops

    p, syn = synthetic_dump
    out = tmp_path / "r.json"
    args = ["analyze", str(p), "--type-map", "1=Li,2=S", "--timestep-fs", str(syn.trajectory.timestep_fs), "-q", "--jobs", "1"]
    assert main(args + ["--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["input"]["mobile_species"] == "Li" and doc["input"]["species"] == {"Li": 12, "S": 8}
    hops = doc["hops"]
    pairs = match_hops([h["ion"] for h in hops], [h["start"] for h in hops], [h["end"] for h in hops], syn.hops)
    assert len(pairs) == len(syn.hops) == len(hops)
    assert main(["analyze", str(p), "--type-map", "1=Li", "-q"]) == 2  # type 2 not named: one-line error


def test_session_mobile_only_finds_the_same_hops(synthetic_dump):
    from iondiff_core.parameters import Parameters
    from iondiff_core.pipeline import analyze

    p, syn = synthetic_dump
    params = Parameters(species="Li", remove_drift=True)
    full = analyze(p, params, timestep_fs=syn.trajectory.timestep_fs, type_map="1=Li,2=S")
    mob = analyze(p, params, timestep_fs=syn.trajectory.timestep_fs, type_map="1=Li,2=S", mobile_only=True)
    assert mob.prep.trajectory.positions_frac.dtype == np.float32
    assert mob.prep.trajectory.n_atoms == 12
    np.testing.assert_array_equal(mob.prep.file_atoms, full.prep.atoms)
    np.testing.assert_allclose(mob.prep.positions_A, full.prep.positions_A, atol=1e-4)
    np.testing.assert_array_equal(mob.hops.ion, full.hops.ion)
    np.testing.assert_array_equal(mob.hops.start, full.hops.start)
    np.testing.assert_array_equal(mob.hops.end, full.hops.end)


def test_ase_traj_atoms_change_names_the_frame(tmp_path):
    ase = pytest.importorskip("ase")
    from ase.io import Trajectory as AseTrajectory

    u, cells = npt_run(n_frames=4)
    p = tmp_path / "md.traj"
    with AseTrajectory(str(p), "w") as w:
        for t in range(4):
            n = len(SPECIES) - (t == 2)
            w.write(ase.Atoms(SPECIES[:n], scaled_positions=(u[t] - np.floor(u[t]))[:n], cell=cells[t], pbc=True))
    with pytest.raises(InputError, match=f"frame 3 has {len(SPECIES) - 1} atoms"):
        read_trajectory(p)


def test_h5md_without_box_or_species_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "md.h5md"
    with h5py.File(p, "w") as f:
        f.create_dataset("particles/all/position/value", data=np.zeros((3, 4, 3)))
        f.create_dataset("particles/all/species", data=np.array([3, 3, 16, 16]))
    with pytest.raises(InputError, match="box/edges"):
        read_trajectory(p)
    with h5py.File(p, "a") as f:
        del f["particles/all/species"]
        f.create_dataset("particles/all/box/edges", data=np.array([5.0, 5.0, 5.0]))
    with pytest.raises(InputError, match="has no species"):
        read_trajectory(p)


def test_formats_recognised_by_content(tmp_path):
    u, cells = npt_run(n_frames=3, big_steps=False)
    (tmp_path / "a").mkdir()
    dump = tmp_path / "a" / "run.out"
    dump.write_text(lammps_dump(u, cells, "unwrapped"))
    xml = tmp_path / "a" / "output.xml"
    xml.write_text(vasprun_text(u, cells))
    xyz = tmp_path / "a" / "frames.txt"
    xyz.write_text(extxyz_text(u, cells))
    h5 = tmp_path / "a" / "particles.dat"
    write_h5md(h5, u, cells, images=False)
    assert read_trajectory(dump, type_map=TYPE_MAP).species == SPECIES
    assert read_trajectory(xml).timestep_fs == pytest.approx(2.0)
    np.testing.assert_allclose(read_trajectory(xyz).cells, cells, atol=1e-9)
    np.testing.assert_allclose(read_trajectory(h5, type_map=TYPE_MAP).positions_frac, u, atol=1e-9)
