import csv
import json
import subprocess
import sys

import pytest

from iondiff_core.batch import material_of
from iondiff_core.cli import main
from iondiff_core.io import write_xdatcar
from iondiff_core.synthetic import make_synthetic, match_hops


def write_run(folder, syn, potim=2.0, nblock=5, tebeg=600):
    folder.mkdir(parents=True, exist_ok=True)
    write_xdatcar(syn.trajectory, folder / "XDATCAR.gz")
    (folder / "INCAR").write_text(f"POTIM = {potim}\nNBLOCK = {nblock}\nTEBEG = {tebeg}\n")
    return folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    syn = make_synthetic(n_frames=2500, n_mobile=12, chain_sizes=(1, 2, 3, 1), seed=4)
    return write_run(tmp_path_factory.mktemp("sim") / "LiX_600K", syn), syn


def test_analyze_writes_the_json_contract(run_folder, tmp_path, capsys):
    folder, syn = run_folder
    out = tmp_path / "r.json"
    assert main(["analyze", str(folder), "--species", "Li", "--out", str(out), "-q", "--hops-csv", str(tmp_path / "h.csv")]) == 0
    doc = json.loads(out.read_text())
    assert doc["input"]["frames"] == 2500 and doc["input"]["timestep_fs"] == 10.0 and doc["input"]["temperature_K"] == 600
    assert doc["input"]["mobile_species"] == "Li" and doc["input"]["species"] == {"Li": 12, "S": 8}
    hops = doc["hops"]
    for key in ("ion", "atom", "start", "end", "length_A", "duration_ps", "open_ended"):
        assert all(key in h for h in hops)
    pairs = match_hops([h["ion"] for h in hops], [h["start"] for h in hops], [h["end"] for h in hops], syn.hops)
    assert len(pairs) == len(syn.hops) == len(hops)
    assert sorted(g["n"] for g in doc["groups"]) == sorted(len(g) for g in syn.groups)
    assert all(set(g) >= {"hops", "ions", "n"} for g in doc["groups"])
    assert set(doc["pdf"]) >= {"n", "p", "A", "A_err", "b", "b_err", "overflow", "fit", "fit_note", "null_p", "null_p_ci95"}
    assert len(doc["pdf"]["null_p"]) == len(doc["pdf"]["p"]) == 20
    assert doc["pdf"]["fit"] is None and doc["pdf"]["fit_note"]  # sizes 2 and 3 only: no fit
    c = doc["concertedness"]
    assert set(c) >= {"observed_fraction", "null_mean", "null_ci95", "excess", "p_value", "replicas", "verdict"}
    assert c["verdict"] == "beyond_chance" and c["replicas"] == 200 and c["observed_fraction"] == 5 / 7
    assert doc["excursions"] == [] and not any(h["open_ended"] for h in hops)
    prov = doc["provenance"]
    assert {f["name"] for f in prov["input"]["files"]} == {"XDATCAR.gz", "INCAR"} and prov["seeds"]["seed"] == 0
    assert prov["parameters"] == doc["parameters"] and "numpy" in prov["software"]
    assert doc["parameters"]["r_vib_A"] == 0.5 and doc["parameters"]["silhouette_threshold"] == 0.7
    assert doc["descriptors"]["D_tracer_cm2_s"] > 0
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert len(rows) == len(hops)
    line = capsys.readouterr().out
    assert "5 hops" not in line and "concerted 71 % of hops vs null" in line and "beyond_chance" in line


def test_unfinished_excursion_is_listed_apart(tmp_path):
    syn = make_synthetic(n_frames=2500, n_mobile=12, chain_sizes=(1, 2), open_end_hop=True, seed=5)
    folder = write_run(tmp_path / "LiOpen_600K", syn)
    out = tmp_path / "r.json"
    assert main(["analyze", str(folder), "--out", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["excursions"]) == 1 and doc["excursions"][0]["open_ended"] and doc["excursions"][0]["centre_to"] == -1
    assert len(doc["hops"]) == 3 and doc["descriptors"]["n_unfinished_excursions"] == 1
    assert any("unfinished excursion" in w for w in doc["warnings"])


def test_parameter_flags_reach_the_analysis(run_folder, tmp_path):
    folder, _ = run_folder
    out = tmp_path / "r.json"
    assert main(["analyze", str(folder), "--out", str(out), "-q", "--r-vib-A", "0.7", "--reference-level", "0.9", "--k-max", "5", "--silhouette", "euclidean"]) == 0
    p = json.loads(out.read_text())["parameters"]
    assert p["r_vib_A"] == 0.7 and p["reference_level"] == 0.9 and p["k_max"] == 5 and p["silhouette"] == "euclidean"


@pytest.mark.parametrize(
    "args, message",
    [
        (["analyze", "/nonexistent/folder"], "nonexistent"),
        (["analyze", "{folder}", "--species", "K"], "species 'K' is not in the file"),
        (["analyze", "{folder}", "--r-vib-A", "-1"], "r_vib_A must be > 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_folder, capsys, args, message):
    folder, _ = run_folder
    code = main([a.format(folder=folder) for a in args] + ["-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_junk_file_is_a_clear_error(tmp_path, capsys):
    junk = tmp_path / "XDATCAR"
    junk.write_bytes(bytes(range(256)) * 40)
    assert main(["analyze", str(tmp_path), "-q"]) == 2
    assert "error:" in capsys.readouterr().err


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "iondiff_core", "analyze", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--silhouette-threshold" in r.stdout and "--r-vib-A" in r.stdout


def test_material_names():
    assert material_of("Li6PS5Cl_500K_50p_run1") == "Li6PS5Cl_50p"
    assert material_of("LGPS_600K") == "LGPS"
    assert material_of("sims/LLZO-800K") == "sims/LLZO"


def test_batch_writes_json_summary_spearman_and_arrhenius(tmp_path):
    root = tmp_path / "sims"
    for k, temp in enumerate((500, 600, 700, 800)):
        syn = make_synthetic(n_frames=1500, n_mobile=10, chain_sizes=(1, 2) + (1,) * k, seed=k, vib_A=0.08 + 0.01 * k)
        write_run(root / f"LiX_{temp}K", syn, tebeg=temp)
    (root / "broken").mkdir()
    (root / "broken" / "XDATCAR").write_text("not an xdatcar\n")
    out = tmp_path / "out"
    code = main(["batch", str(root), "--out-dir", str(out), "--jobs", "2", "-q"])
    assert code == 1  # one simulation failed, the others are analysed
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 5 and sum(1 for r in rows if r["error"]) == 1
    assert len(list(out.glob("LiX_*.json"))) == 4
    cross = json.loads((out / "cross_simulation.json").read_text())
    assert cross["analysed"] == 4
    assert "D_tracer_cm2_s" in cross["spearman"]["names"]
    assert cross["arrhenius"]["LiX"]["n_temperatures"] == 4
    pooled = cross["pdf_pooled"]
    assert set(pooled) == {"all", "Li-based"} and pooled["all"]["counts"][1] >= 4  # one planted pair per run
    assert pooled["all"]["overflow"] == 0 and "fit_note" in pooled["all"]
    assert pooled["all"]["concertedness"]["verdict"] in ("beyond_chance", "chance")
    assert pooled["all"]["concertedness"]["replicas"] == 200
    assert {"verdict", "concerted_fraction", "null_fraction"} <= set(rows[0])


def test_damaged_gzip_exits_2_and_allow_truncated_analyses_its_complete_frames(tmp_path, capsys):
    syn = make_synthetic(n_frames=400, n_mobile=8, chain_sizes=(1, 2), seed=6)
    folder = write_run(tmp_path / "LiCut_600K", syn)
    data = (folder / "XDATCAR.gz").read_bytes()
    (folder / "XDATCAR.gz").write_bytes(data[: len(data) // 2])
    assert main(["analyze", str(folder), "-q"]) == 2
    assert "the file is damaged" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main(["analyze", str(folder), "-q", "--allow-truncated", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert 20 <= doc["input"]["frames"] < 400 and any(w.startswith("DAMAGED FILE") for w in doc["warnings"])


# --------------------------------------------------------------------------- bad outputs and implausible values
def _refuse_analysis(monkeypatch):
    """Make any analysis fail the test: the refusals below must come before it."""
    from iondiff_core import pipeline

    def no_analysis(*a, **k):
        raise AssertionError("the analysis ran before the output path was checked")

    monkeypatch.setattr(pipeline, "analyze", no_analysis)


@pytest.fixture
def small_run(tmp_path):
    syn = make_synthetic(n_frames=300, n_mobile=4, chain_sizes=(1,), seed=2)
    return write_run(tmp_path / "LiX_600K", syn)


def test_unwritable_out_fails_at_once(small_run, tmp_path, monkeypatch, capsys):
    import os

    _refuse_analysis(monkeypatch)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    cases = {
        str(tmp_path / "missing" / "r.json"): "does not exist",
        "/proc/iondiff-r.json": "cannot write in /proc",  # read-only even for root
        str(tmp_path): "is a folder",
        str(fifo): "is not a regular file",
    }
    for flag in ("--out", "--hops-csv"):
        for out, words in cases.items():
            assert main(["analyze", str(small_run), "-q", flag, out]) == 2
            err = capsys.readouterr().err
            assert f"error: {flag} {out}: " in err and words in err, err
    assert fifo.exists() and not fifo.is_file()  # never replaced by a file
    assert main(["batch", str(small_run), "--out-dir", "/proc/iondiff-batch", "-q"]) == 2
    assert "--out-dir /proc/iondiff-batch: cannot create the folder" in capsys.readouterr().err


@pytest.mark.skipif(getattr(__import__("os"), "geteuid", lambda: 0)() == 0, reason="root writes in read-only folders")
def test_read_only_out_folder_fails_at_once(small_run, tmp_path, monkeypatch, capsys):
    _refuse_analysis(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["analyze", str(small_run), "-q", "--out", str(ro / "r.json")]) == 2
        assert "cannot write in" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("flag,value", [("--temperature", "1e308"), ("--temperature", "-5"), ("--temperature", "nan"),
                                        ("--timestep-fs", "1e30"), ("--timestep-fs", "0.001"), ("--timestep-fs", "inf")])
def test_implausible_explicit_values_are_refused_at_once(small_run, flag, value, monkeypatch, capsys):
    _refuse_analysis(monkeypatch)
    assert main(["analyze", str(small_run), "-q", flag, value]) == 2
    assert "must be between" in capsys.readouterr().err
    assert main(["batch", str(small_run), "--out-dir", str(small_run.parent / "b"), "-q", flag, value]) == 2


@pytest.mark.parametrize("incar,tag", [("POTIM = 2\nNBLOCK = 1e30\nTEBEG = 600\n", "NBLOCK"),
                                       ("POTIM = 1e6\nNBLOCK = 1\nTEBEG = 600\n", "POTIM"),
                                       ("POTIM = 0.001\nNBLOCK = 1\nTEBEG = 600\n", "POTIM"),
                                       ("POTIM = 2\nNBLOCK = 5\nTEBEG = 1e308\n", "TEBEG")])
def test_implausible_incar_values_are_ignored_with_a_warning(small_run, incar, tag, capsys):
    from iondiff_core.io import read_incar, read_trajectory

    (small_run / "INCAR").write_text(incar)
    info = read_incar(small_run / "INCAR")
    warned = [w for w in info["warnings"] if tag in w and "not plausible" in w]
    assert len(warned) == 1 and "INCAR line" in warned[0]
    traj = read_trajectory(small_run)
    if tag == "TEBEG":
        assert traj.temperature_K is None and traj.timestep_fs == 10.0
    else:
        assert traj.timestep_fs is None and traj.temperature_K == 600.0
        # Without a timestep the time-dependent results are undetermined, and the warning says why.
        assert main(["analyze", str(small_run), "-q"]) == 0
        out, err = capsys.readouterr()
        assert "D_tracer = undetermined" in out and f"warning: {small_run / 'INCAR'} line" in err and tag in err
        assert main(["analyze", str(small_run), "-q", "--timestep-fs", "10"]) == 0
        assert "D_tracer = undetermined" not in capsys.readouterr().out
    assert any(tag in w and "not plausible" in w for w in traj.warnings)
