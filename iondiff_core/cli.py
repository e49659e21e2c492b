"""Command line: ``iondiff analyze PATH`` and ``iondiff batch ROOT...`` (the same as
``python -m iondiff_core ...``).

Every field of :class:`~iondiff_core.parameters.Parameters` is a flag
(``--r-vib-A 0.6``, ``--silhouette euclidean`` ...). Bad input exits with status 2
and one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from iondiff_core.batch import analyse_one, material_of, simulation_name, write_atomic
from iondiff_core.errors import InputError
from iondiff_core.parameters import Parameters

def _parse_level(text: str):
    return text if text == "mean" else float(text)


def _parse_optional_int(text: str):
    return None if text.lower() in ("none", "auto") else int(text)


def _annotated_type(annotation) -> type:
    """The scalar type of an optional field ("float | None" -> float)."""
    text = str(annotation)
    return next((t for t in (float, int, str) if t.__name__ in text), str)


def add_parameter_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Parameters field, with its default and docstring-derived type."""
    g = parser.add_argument_group("method parameters (METHOD.md)")
    for f in dataclasses.fields(Parameters):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.name == "reference_level":
            g.add_argument(flag, type=_parse_level, default=None, help=f"'mean' or a quantile (default {default})")
        elif f.name == "k_max":
            g.add_argument(flag, type=_parse_optional_int, default=None, help="largest K, or 'auto' (default: auto)")
        elif f.name == "ion_charge":
            g.add_argument(flag, type=float, default=None, help="mobile ion charge in e (default: from the species)")
        elif f.name == "species":
            continue  # given as --species with the input options
        elif f.name == "reference_structure":
            g.add_argument(flag, default=None, help="structure file of the reference lattice (default: first frame)")
        elif isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {default})")
        else:
            kind = type(default) if default is not None else _annotated_type(f.type)
            g.add_argument(flag, type=kind, default=None, help=f"(default {default})")


def parameters_from_args(args) -> Parameters:
    values = {}
    for f in dataclasses.fields(Parameters):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return Parameters(**values)


class TerminalProgress:
    """A one-line progress bar on a terminal, plain lines otherwise."""

    def __init__(self, stream=sys.stderr, quiet=False):
        self.stream, self.quiet = stream, quiet
        self.tty = stream.isatty()
        self._last = ("", -1.0)

    def __call__(self, stage: str, fraction: float, message: str):
        if self.quiet:
            return
        if self.tty:
            bar = "#" * int(30 * fraction)
            self.stream.write(f"\r[{bar:<30}] {100 * fraction:5.1f}% {message[:60]:<60}")
            if fraction >= 1.0:
                self.stream.write("\n")
            self.stream.flush()
        elif stage != self._last[0] or fraction - self._last[1] >= 0.1 or fraction >= 1.0:
            self.stream.write(f"{100 * fraction:5.1f}% {stage}: {message}\n")
            self._last = (stage, fraction)


def _add_input_flags(p):
    p.add_argument("--species", help="mobile species (default: first of Li, Na, K, Ag, Cu, F, Cl, Br, I, O, H)")
    p.add_argument("--timestep-fs", type=float, help="fs between stored frames (default: POTIM x NBLOCK from INCAR)")
    p.add_argument("--temperature", type=float, help="temperature in K (default: TEBEG from INCAR)")
    p.add_argument("--type-map", help="species of numeric atom types (LAMMPS dumps, H5MD), e.g. 1=Li,2=P,3=S")
    p.add_argument("--allow-truncated", action="store_true",
                   help="analyse the complete frames of a compressed file that ends early (damaged; flagged in the JSON)")
    p.add_argument("--cache-dir", help="folder for the stage cache: clustering, and the unwrapped positions memory-mapped (default: none)")
    p.add_argument("--all-atoms", action="store_true",
                   help="read every atom in float64 (default: only the mobile species, in float32: less memory, same results)")
    p.add_argument("--max-text-mb", type=float,
                   help="stop reading past this many MB of text after decompression (default: no limit)")
    p.add_argument("--max-atom-frames", type=int,
                   help="stop reading past this many atoms x frames (default: no limit)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser(prog: str = "iondiff", extend_batch=None) -> argparse.ArgumentParser:
    """The command line's parser; ``extend_batch(subparser)`` may add options to ``batch``
    (the dashboard adds ``--celery``, see :func:`main`'s ``batch_executor``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Find ion hops and concerted groups in MD trajectories.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="analyse one trajectory")
    a.add_argument("path", help="folder holding an XDATCAR (and INCAR), or a trajectory file")
    a.add_argument("--out", help="JSON file to write (default: print a summary only)")
    a.add_argument("--hops-csv", help="also write the hops as CSV")
    _add_input_flags(a)
    add_parameter_flags(a)
    b = sub.add_parser("batch", help="analyse every simulation under the given folders")
    b.add_argument("roots", nargs="+", help="folders to search for simulations")
    b.add_argument("--out-dir", required=True, help="folder for one JSON per simulation and the summary")
    _add_input_flags(b)
    add_parameter_flags(b)
    if extend_batch is not None:
        extend_batch(b)
    return parser


def writable_file(path: str, flag: str) -> Path:
    """Check, before any work, that ``path`` can be written (an existing folder, writable,
    ``path`` not itself a folder or a device): an hour of analysis must not end on a bad ``--out``."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file name")
    if p.exists() and not p.is_file():  # the atomic write would replace a device or FIFO by a file
        raise InputError(f"{flag} {path}: is not a regular file; give a file name")
    parent = p.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: the folder {parent} does not exist")
    _probe(parent, f"{flag} {path}")
    return p


def writable_folder(path: str, flag: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    _probe(p, f"{flag} {path}")
    return p


def _probe(folder: Path, what: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".iondiff-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None


def _check_input_flags(args) -> None:
    """Refuse implausible explicit values at once (not per simulation, after reading)."""
    from iondiff_core.io import plausible_temperature_K, plausible_timestep_fs

    if args.timestep_fs is not None:
        plausible_timestep_fs(args.timestep_fs)
    if args.temperature is not None:
        plausible_temperature_K(args.temperature)
    read_limits(args)


def _run_analyze(args) -> int:
    from iondiff_core import pipeline, report

    _check_input_flags(args)
    for value, flag in ((args.out, "--out"), (args.hops_csv, "--hops-csv")):
        if value:
            writable_file(value, flag)
    params = parameters_from_args(args).replace(species=args.species)
    progress = TerminalProgress(quiet=args.quiet)
    t0 = time.perf_counter()
    result = pipeline.analyze(
        args.path, params, args.cache_dir, progress, args.timestep_fs, args.temperature, args.jobs, type_map=args.type_map,
        allow_truncated=args.allow_truncated, mobile_only=not args.all_atoms, limits=read_limits(args),
    )
    doc = report.with_provenance(result.to_dict(), result)
    doc["elapsed_s"] = round(time.perf_counter() - t0, 3)
    if args.out:
        write_atomic(Path(args.out), report.dumps(doc))
    if args.hops_csv:
        write_atomic(Path(args.hops_csv), report.hops_csv(result))
    _print_summary(doc)
    return 0


def _fmt(v, spec=".3g") -> str:
    return "undetermined" if v is None else format(v, spec)


def summary_line(doc: dict) -> str:
    """One line: what was analysed, the hops, the concertedness verdict, <n> and D with intervals."""
    i, d, pdf, c = doc["input"], doc["descriptors"], doc["pdf"], doc.get("concertedness") or {}
    exc = len(doc.get("excursions", []))
    line = (f"{i['source']}: {i['frames']} frames, {i['mobile_ions']} {i['mobile_species']} ions; "
            f"{len(doc['hops'])} hops" + (f" (+{exc} unfinished excursions)" if exc else "") +
            f" in {len(doc['groups'])} group{'' if len(doc['groups']) == 1 else 's'}")
    if c:
        lo, hi = c["null_ci95"]
        line += (f"; concerted {100 * c['observed_fraction']:.0f} % of hops vs null {100 * c['null_mean']:.0f} % "
                 f"[{100 * lo:.0f}, {100 * hi:.0f}], p = {c['p_value']:.2g}: {c['verdict']}")
    if pdf.get("mean_n") is None:
        line += "; <n> undetermined (no concerted group)"
    else:
        lo, hi = pdf.get("mean_n_ci95") or (None, None)
        line += f"; <n> = {pdf['mean_n']:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")
        if pdf.get("overflow_count"):
            line += f" ({pdf['overflow_count']} groups > n_max)"
    D, ci = d.get("D_tracer_cm2_s"), d.get("D_tracer_ci95_cm2_s")
    line += f"; D_tracer = {_fmt(D)}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "") + " cm^2/s"
    return line


def _print_summary(doc: dict) -> None:
    print(summary_line(doc))
    for w in doc.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)


def read_limits(args):
    """The :class:`~iondiff_core.io.ReadLimits` of ``--max-text-mb`` and ``--max-atom-frames`` (None: no cap)."""
    from iondiff_core.io.limits import ReadLimits

    mb, af = getattr(args, "max_text_mb", None), getattr(args, "max_atom_frames", None)
    if mb is None and af is None:
        return None
    if mb is not None and not (0 < mb < 1e12):
        raise InputError(f"--max-text-mb must be a positive number of MB, got {mb}")
    return ReadLimits(None if mb is None else max(1, int(mb * 1e6)), af)


# --------------------------------------------------------------------------- batch
def local_batch(jobs: list[tuple[str, str, str]], args, params: dict, progress) -> list[dict]:
    """The default batch executor: :func:`iondiff_core.batch.analyse_one` in ``--jobs`` local processes.

    Every executor takes (name, path, out_json) jobs, the parsed arguments, the
    parameters as a dict and a progress callback, and returns one row per job with its
    ``name`` (``python -m dashboard batch --celery`` passes the dashboard's workers instead).
    """
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {
            pool.submit(analyse_one, p, o, params, args.cache_dir, args.timestep_fs, args.temperature, args.type_map,
                        args.allow_truncated, not args.all_atoms, read_limits(args)): n
            for n, p, o in jobs
        }
        for k, fut in enumerate(as_completed(futs), 1):
            row = {"name": futs[fut], **fut.result()}
            rows.append(row)
            progress("batch", k / len(jobs), f"{row['name']}: {row['error'] or 'ok'}")
    return rows


def _run_batch(args, executor=local_batch) -> int:
    from iondiff_core import batch
    from iondiff_core.io import find_simulations

    _check_input_flags(args)
    params = parameters_from_args(args).replace(species=args.species)
    out = writable_folder(args.out_dir, "--out-dir")
    jobs = []
    for root in map(Path, args.roots):
        if not root.exists():
            raise InputError(f"{root}: no such folder")
        for sim in find_simulations(root):
            name = simulation_name(sim, root)
            jobs.append((name, str(sim), str(out / f"{name}.json")))
    if not jobs:
        raise InputError(f"no simulation (XDATCAR, extxyz, vasprun.xml, LAMMPS dump) found under {', '.join(args.roots)}")
    pd = params.to_dict()
    progress = TerminalProgress(quiet=args.quiet)
    rows = executor(jobs, args, pd, progress)
    for r in rows:
        r["material"] = material_of(r["name"])
    rows.sort(key=lambda r: r["name"])
    docs = [json.loads((out / f"{r['name']}.json").read_text()) for r in rows if not r["error"]]
    batch.write_summary(rows, out, docs)
    failed = [r for r in rows if r["error"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} simulations analysed; summary in {out / 'summary.csv'}")
    for r in failed:
        print(f"error: {r['name']}: {r['error']}", file=sys.stderr)
    return 0 if not failed else 1


def main(argv=None, *, parser: argparse.ArgumentParser | None = None, batch_executor=None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some batch runs failed,
    2 bad input, 3 an unexpected error, 130 interrupted).

    ``parser``: a parser made by :func:`build_parser` (with the dashboard's batch
    options); ``batch_executor``: runs a batch's jobs instead of :func:`local_batch`,
    with the same arguments.
    """
    args = (parser or build_parser()).parse_args(argv)
    try:
        if args.command == "analyze":
            return _run_analyze(args)
        return _run_batch(args, batch_executor or local_batch)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
