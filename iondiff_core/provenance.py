"""Reproducibility record, generated methods paragraph and citations of an analysis.

* :func:`record` -- what is needed to reproduce one analysis: the input's SHA-256 (and
  each file's), every parameter, the software versions and the seeds. JSON-ready.
* :func:`methods_paragraph` -- a methods paragraph for a paper, generated from a result
  document (``report.result_to_dict``, with or without its ``provenance`` record).
* :data:`BIBTEX` -- BibTeX of the method's paper and of this software.

Pure functions of their arguments (the versions are those of the running interpreter).
"""

from __future__ import annotations

import hashlib
import math
import platform
from importlib import metadata
from pathlib import Path

#: BibTeX key of the method's paper and of this software (used in :data:`BIBTEX`).
PAPER_KEY = "lopez2024concerted"
SOFTWARE_KEY = "iondiff_dashboard"

#: Software whose version is recorded (import name -> distribution name).
PACKAGES = {"numpy": "numpy", "scipy": "scipy", "sklearn": "scikit-learn", "ase": "ase"}

SOFTWARE_NAME = "iondiff-dashboard"
SOFTWARE_TITLE = "IonDiff dashboard: concerted ionic hops in molecular-dynamics trajectories"


def _package_version() -> str:
    from iondiff_core import __version__

    return __version__


BIBTEX = f"""@article{{{PAPER_KEY},
  author  = {{L{{\\'o}}pez, Cibr{{\\'a}}n and Rurali, Riccardo and Cazorla, Claudio}},
  title   = {{How Concerted Are Ionic Hops in Inorganic Solid-State Electrolytes?}},
  journal = {{Journal of the American Chemical Society}},
  year    = {{2024}},
  volume  = {{146}},
  number  = {{12}},
  pages   = {{8269--8279}},
  doi     = {{10.1021/jacs.3c13279}},
  eprint  = {{2311.15620}},
  archivePrefix = {{arXiv}}
}}

@software{{{SOFTWARE_KEY},
  author  = {{{{The IonDiff dashboard developers}}}},
  title   = {{{SOFTWARE_TITLE}}},
  version = {{{_package_version()}}},
  year    = {{2026}},
  note    = {{Analysis engine iondiff\\_core and Dash dashboard; method of L{{\\'o}}pez, Rurali and Cazorla (2024)}}
}}
"""


def software_versions() -> dict:
    """Versions of Python, this package and the numerical libraries it computes with."""
    out = {"python": platform.python_version(), SOFTWARE_NAME: _package_version()}
    for module, dist in PACKAGES.items():
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def file_sha256(path) -> str:
    """SHA-256 of one file's bytes (as ``sha256sum`` prints it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def input_files(path) -> list[dict]:
    """``name``, ``bytes`` and ``sha256`` of the input: the file, or each file of a run folder."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return [{"name": f.name, "bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in files]


def _params_dict(params) -> dict:
    if params is None:
        return {}
    return dict(params.to_dict() if hasattr(params, "to_dict") else params)


def record(doc: dict, params=None, input_info: dict | None = None) -> dict:
    """The reproducibility record of one analysis.

    Parameters
    ----------
    doc : dict
        The result document (``report.result_to_dict``); its ``input`` and
        ``parameters`` are used where the other arguments do not say.
    params : Parameters or dict, optional
        Every parameter used (default: ``doc["parameters"]``).
    input_info : dict, optional
        What the caller knows of the input beyond the document: ``sha256`` (the digest
        the result is keyed by), ``files`` (:func:`input_files`), ``timestep_fs`` and
        ``temperature_K`` given by hand, ``source`` (a display name), ``flags``.

    Returns
    -------
    dict
        ``input`` (sha256, files, frames, atoms, species, mobile species, timestep in
        fs, temperature in K), ``parameters`` (all of them), ``seeds`` (every parameter
        named ``seed``/``*_seed``, and the random-reference and null-model repetitions
        they drive), ``software`` (:func:`software_versions`) and ``citation`` (the
        BibTeX keys of :data:`BIBTEX`).
    """
    info = dict(input_info or {})
    given = doc.get("input", {}) or {}
    p = _params_dict(params) or dict(doc.get("parameters", {}) or {})
    inp = {
        "source": info.get("source", given.get("source")),
        "sha256": info.get("sha256", given.get("sha256")),
        "files": info.get("files", []),
        "frames": given.get("frames"),
        "atoms": given.get("atoms"),
        "species": given.get("species"),
        "mobile_species": given.get("mobile_species"),
        "timestep_fs": info.get("timestep_fs", given.get("timestep_fs")),
        "temperature_K": info.get("temperature_K", given.get("temperature_K")),
    }
    if info.get("flags"):
        inp["flags"] = info["flags"]
    seeds = {k: v for k, v in p.items() if k == "seed" or k.endswith("_seed")}
    for k in ("n_random", "n_null"):  # the draws the seed drives
        if k in p:
            seeds[k] = p[k]
    return {
        "input": inp,
        "parameters": p,
        "seeds": seeds,
        "software": software_versions(),
        "citation": [PAPER_KEY, SOFTWARE_KEY],
    }


def _fmt(x, spec: str = ".3g", unit: str = "") -> str | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return f"{x:{spec}}{unit}"


def methods_paragraph(doc: dict) -> str:
    """A methods paragraph describing how ``doc`` was computed, to paste into a paper.

    Uses ``doc["provenance"]`` (from :func:`record`) when present, else builds the
    record from the document itself. States only what the document holds: a value it
    lacks (an unknown timestep, no fit) is left out or said to be undetermined.
    """
    prov = doc.get("provenance") or record(doc)
    inp, p, sw = prov["input"], prov["parameters"], prov["software"]
    species = inp.get("mobile_species") or "mobile"
    run = []
    if inp.get("frames"):
        run.append(f"{inp['frames']} frames")
    if _fmt(inp.get("timestep_fs")):
        run.append(f"{_fmt(inp['timestep_fs'], 'g')} fs apart")
    if _fmt(inp.get("temperature_K")):
        run.append(f"at {_fmt(inp['temperature_K'], 'g')} K")
    if inp.get("atoms"):
        run.append(f"{inp['atoms']} atoms")
    files = [f for f in inp.get("files") or [] if f.get("sha256")]
    sha = ("SHA-256 " + "; ".join(f"{f['name']} {f['sha256']}" for f in files) if files
           else f"input SHA-256 {inp['sha256']}" if inp.get("sha256") else "")
    s = [
        f"Ionic hops of the {species} ions were identified with the unsupervised k-means clustering method of "
        f"López, Rurali and Cazorla [{PAPER_KEY}], as implemented in {SOFTWARE_NAME} {sw.get(SOFTWARE_NAME)} "
        f"[{SOFTWARE_KEY}] (Python {sw.get('python')}, NumPy {sw.get('numpy')}, SciPy {sw.get('scipy')}, "
        f"scikit-learn {sw.get('scikit-learn')})."
    ]
    if run or sha:
        s.append("The trajectory (" + "; ".join(x for x in (", ".join(run), sha) if x) + ") was analysed as follows.")
    if p:
        k_max = p.get("k_max")
        k_txt = f"K up to {k_max}" if k_max else f"K raised until the silhouette had fallen for {p.get('k_patience')} values past its maximum, at most {p.get('k_max_limit')}"
        sil = "the squared-distance silhouette of the paper" if p.get("silhouette") == "squared" else "the Euclidean silhouette of scikit-learn"
        s.append(
            f"Vibration centres of each ion were found by k-means ({p.get('kmeans_n_init')} restarts, {k_txt}) "
            f"scored with {sil}; a single centre was kept when the best mean silhouette was below "
            f"{p.get('silhouette_threshold')}."
            + (f" Positions were averaged over {_fmt(p.get('denoise_fs'), 'g')} fs before clustering." if p.get("denoise_fs") else "")
        )
        rule = ("within r_vib = {r} Å of a centre" if p.get("hop_rule") == "paper"
                else "within the larger of r_vib = {r} Å and the centre's thermal cloud ({q:g} quantile)")
        s.append(
            "A frame was taken as vibrating " + rule.format(r=p.get("r_vib_A"), q=p.get("cloud_quantile") or 0)
            + "; a hop is a transit between two different centres."
        )
        level = "the mean" if p.get("reference_level") == "mean" else f"the {float(p['reference_level']):.3g} quantile"
        span = ("the hop's transit" if p.get("width_rule") == "duration"
                else "the hop's whole motion, from the last frame at its start site to the first at its end site")
        conc = (f"Each hop was a Gaussian event in time whose full width at half maximum is {span} (x {p.get('width_factor')}); "
                f"two hops were concerted when their events overlap in time and their Pearson correlation exceeds "
                f"{level} of a random reference ({p.get('n_random')} repetitions, seed {p.get('seed')})")
        if p.get("pair_distance_A"):
            conc += f" and they came within {p['pair_distance_A']} Å of each other"
        s.append(conc + "; connected concerted hops form a group of n events.")
        if "n_null" in p:
            s.append(f"Whether the groups exceed chance was tested against {p['n_null']} null replicas in which each "
                     "ion's hop train is shifted in time by its own random offset.")
        s.append(
            f"The distribution of n was computed over n = 1..{p.get('n_max')}, larger groups counted apart, and "
            "f(n) = A exp(-b n) fitted over n >= 2. The tracer diffusion coefficient was fitted to the MSD over "
            f"{p.get('msd_fit_start'):g} to {p.get('msd_fit_end'):g} of the longest lag."
        )
    res = []
    if isinstance(doc.get("hops"), list):
        res.append(f"{len(doc['hops'])} hops")
    if isinstance(doc.get("groups"), list):
        res.append(f"{len(doc['groups'])} group{'s' if len(doc['groups']) != 1 else ''}")
    pdf = doc.get("pdf") or {}
    mean_n = _fmt(pdf.get("mean_n"), ".2f")
    if mean_n:
        std_n = _fmt(pdf.get("std_n"), ".2f")
        res.append(f"mean n = {mean_n}" + (f" ± {std_n} (std) over concerted groups" if std_n else " over concerted groups"))
    if res:
        s.append("The analysis found " + ", ".join(res) + ".")
    conc = doc.get("concertedness") or {}
    share, lo_hi = _fmt(conc.get("observed_fraction"), ".2f"), conc.get("null_ci95") or [None, None]
    if share and _fmt(lo_hi[0], ".2f") and _fmt(lo_hi[1], ".2f"):
        s.append(f"A share {share} of the hops were in concerted groups, against a 95 % band of "
                 f"[{lo_hi[0]:.2f}, {lo_hi[1]:.2f}] for chance coincidences"
                 + (f" (p = {conc['p_value']:.2g}, {conc.get('replicas')} replicas)" if _fmt(conc.get("p_value")) else "") + ".")
    d = doc.get("descriptors") or {}
    D, ci = _fmt(d.get("D_tracer_cm2_s")), d.get("D_tracer_ci95_cm2_s") or [None, None]
    if D:
        s.append(f"The tracer diffusion coefficient is {D} cm²/s"
                 + (f" (95 % interval {ci[0]:.3g} to {ci[1]:.3g} cm²/s)" if _fmt(ci[0]) and _fmt(ci[1]) else " (no interval available)")
                 + ".")
    if inp.get("flags"):
        s.append(f"Caveat: {inp['flags']}.")
    return " ".join(s)
