"""Cross-simulation views of the library (paper Figs. 4 to 7): the Spearman matrix of
the descriptors, the pooled pdf of n per family, the Arrhenius plot with Ea, and ν
against ν0.

Each view is drawn only where the selected runs support it; otherwise ``process_data``
says why (``reason``) and the figure shows that sentence instead of a misleading plot.
Notes (columns left out, runs without a fit) go next to the figure.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import plotly.graph_objects as go
from scipy import special, stats

from iondiff_core import descriptors as desc
from iondiff_core.batch import pooled_distributions
from iondiff_core.transport import KB_EV_PER_K

#: What each descriptor of the Spearman matrix is, with its unit (shown on hover and under the figure).
DESCRIPTOR_HELP = {
    "D_tracer_cm2_s": "tracer diffusion coefficient D from the MSD (cm²/s)",
    "hop_length_mean_A": "mean hop length Δr, centre to centre (Å)",
    "hop_length_max_A": "longest hop (Å)",
    "hop_length_min_A": "shortest hop (Å)",
    "hop_duration_mean_ps": "mean hop duration Δt, time in transit (ps)",
    "hop_duration_max_ps": "longest hop duration (ps)",
    "hop_duration_min_ps": "shortest hop duration (ps)",
    "nu_THz": "hopping frequency ν = hops / (mobile ions x simulated time) (THz)",
    "residence_time_metastable_ps": "residence time γ at metastable centres, > 1 Å from every lattice site (ps)",
    "mean_n": "mean number n of hop events per concerted group (n >= 2)",
    "haven_ratio": "Haven ratio D_tracer / D_collective (undetermined where the collective D's interval includes 0)",
}
#: Descriptors of the paper's Fig. 6a, against the tracer D (measured, not set by the user).
SPEARMAN_KEYS = tuple(DESCRIPTOR_HELP)
#: Columns set by the simulation, not measured: never in the Spearman matrix.
DESIGN_KEYS = {"temperature_K": "the temperature is set by the simulation, not measured; D against T is the Arrhenius plot"}
#: Fewest runs for a Spearman matrix: with 3 or 4 every ρ is one of a handful of values and p < 0.05 is out of reach.
MIN_RUNS_SPEARMAN = 5
#: Fewest groups, over the selected runs, for a pooled pdf of n.
MIN_GROUPS_POOLED = 10
#: Parameters that change the groups: runs pooled with different values get a note.
POOL_PARAMETERS = ("r_vib_A", "reference_level", "width_factor", "silhouette_threshold", "pair_distance_A", "hop_rule")


def _value(v) -> float:
    try:
        return float(v) if v is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _spearman(entries: list[dict]) -> dict:
    n_runs = len(entries)
    left_out = [{"column": k, "why": why} for k, why in DESIGN_KEYS.items()]
    if n_runs < MIN_RUNS_SPEARMAN:
        return {"reason": f"{n_runs} run{'s' if n_runs != 1 else ''} selected: the Spearman matrix needs at least "
                          f"{MIN_RUNS_SPEARMAN} (with fewer, every ρ is one of a few values such as ±1 and no p-value "
                          "can be small)", "left_out": left_out, "runs": n_runs}
    table = {}
    for k in SPEARMAN_KEYS:
        vals = np.array([_value(e["descriptors"].get(k)) for e in entries])
        finite = vals[np.isfinite(vals)]
        if finite.size == 0:
            left_out.append({"column": k, "why": "no run has a value"})
        elif finite.size < MIN_RUNS_SPEARMAN:
            left_out.append({"column": k, "why": f"only {finite.size} of {n_runs} runs have a value"})
        elif np.all(finite == finite[0]):
            left_out.append({"column": k, "why": f"the same in every run ({finite[0]:.4g})"})
        else:
            table[k] = vals
    if len(table) < 2:
        return {"reason": "fewer than two descriptors vary across the selected runs", "left_out": left_out, "runs": n_runs}
    sp = desc.spearman_matrix(table)
    # The t approximation gives p = 0 for a perfect rank correlation; no test on N runs can
    # give less than 2 / N! (the exact permutation p of a perfect one), so p is floored there.
    with np.errstate(over="ignore"):
        floor = 2.0 / special.factorial(sp.n.astype(float))
    p = np.where(np.isfinite(sp.p), np.maximum(sp.p, floor), np.nan)
    np.fill_diagonal(p, np.nan)
    return {"names": list(sp.names), "rho": sp.rho, "p": p, "n": sp.n, "left_out": left_out, "runs": n_runs}


def _pooled(entries: list[dict]) -> dict:
    sizes = [n for e in entries for n in e["groups"]]
    if not entries:
        return {"reason": "no runs selected"}
    if not sizes:
        return {"reason": "no hops in the selected runs: there is no distribution of n"}
    if not any(n >= 2 for n in sizes):
        return {"reason": f"all {len(sizes)} groups are isolated hops (n = 1): no concerted events to pool"}
    if len(sizes) < MIN_GROUPS_POOLED:
        return {"reason": f"only {len(sizes)} groups in the selected runs: a pooled pdf needs at least {MIN_GROUPS_POOLED}"}
    n_max = Counter(int(e.get("n_max") or 20) for e in entries).most_common(1)[0][0]
    docs = [{"groups": [{"n": n} for n in e["groups"]], "input": {"mobile_species": e["species"]}} for e in entries]
    notes = []
    for k in POOL_PARAMETERS:
        values = {str(e.get("params", {}).get(k)) for e in entries if k in e.get("params", {})}
        if len(values) > 1:
            notes.append(f"pooled over runs analysed with different {k} ({', '.join(sorted(values))})")
    return {"families": pooled_distributions(docs, n_max), "n_max": n_max, "groups": len(sizes), "notes": notes}


def _fit_of(p: dict) -> dict | None:
    """The exponential fit of a pooled pdf, from the old (flat A, b) or the new (``fit``) document."""
    fit = p.get("fit") if isinstance(p.get("fit"), dict) else p
    A, b = _value(fit.get("A")), _value(fit.get("b"))
    if not (np.isfinite(A) and np.isfinite(b)):
        return None
    return {"A": A, "b": b, "A_ci95": fit.get("A_ci95"), "b_ci95": fit.get("b_ci95"), "b_err": _value(fit.get("b_err"))}


def _fit_note(p: dict) -> str:
    fit = p.get("fit") if isinstance(p.get("fit"), dict) else {}
    return p.get("fit_note") or p.get("reason") or fit.get("reason") or "no exponential fit (too few sizes n >= 2)"


def _arrhenius(entries: list[dict]) -> dict:
    rows = [{"material": e["material"], "temperature_K": e["temperature_K"], "D_tracer_cm2_s": e["descriptors"].get("D_tracer_cm2_s"),
             "D_collective_cm2_s": e["descriptors"].get("D_collective_cm2_s")} for e in entries]
    fits, reasons = {}, []
    for m, a in desc.arrhenius_by_material(rows).items():
        mine = [e for e in entries if e["material"] == m]
        if a["n_temperatures"] < 2:
            temps = a["temperatures_K"]
            where = f"all at {temps[0]:g} K" if temps else "no temperature known"
            reasons.append(f"{m}: {len(mine)} run{'s' if len(mine) != 1 else ''}, {where}: no Arrhenius fit "
                           "(it needs at least 2 temperatures; edit a run's temperature or material in the table if it is wrong)")
            continue
        pts = []
        for e in mine:
            T, D = _value(e["temperature_K"]), _value(e["descriptors"].get("D_tracer_cm2_s"))
            if np.isfinite(T) and T > 0 and np.isfinite(D) and D > 0:
                ci = e["descriptors"].get("D_tracer_ci95_cm2_s") or [None, None]
                pts.append((1000.0 / T, D, _value(ci[0]), _value(ci[1]), e["name"]))
        Ea, err, k = _value(a["Ea_tracer_eV"]), _value(a["Ea_tracer_err_eV"]), int(a["n_points_tracer"] or 0)
        half = float(stats.t.ppf(0.975, k - 2) * err) if k > 2 and np.isfinite(err) else np.nan
        fit = {"points": pts, "Ea_eV": Ea, "Ea_ci95_halfwidth_eV": half, "D0_cm2_s": _value(a["D0_tracer_cm2_s"]),
               "n_points": k, "n_temperatures": a["n_temperatures"], "reason": a.get("reason_tracer") or ""}
        if not np.isfinite(Ea):
            reasons.append(f"{m}: no Arrhenius fit ({fit['reason'] or 'D undetermined'})")
        elif not np.isfinite(half):
            reasons.append(f"{m}: Ea from {k} points has no interval (a line through 2 points has no residual)")
        fits[m] = fit
    return {"fits": fits, "reasons": reasons}


def _material_groups(entries: list[dict]) -> list[dict]:
    """Runs by material and temperature, sorted (the table groups the same way)."""
    by: dict[tuple, list[str]] = {}
    for e in entries:
        by.setdefault((str(e["material"]), _value(e["temperature_K"])), []).append(e["name"])
    key = lambda mt: (mt[0], np.inf if not np.isfinite(mt[1]) else mt[1])  # noqa: E731
    return [{"material": m, "temperature_K": None if not np.isfinite(t) else t, "runs": len(names), "names": ", ".join(names)}
            for (m, t), names in sorted(by.items(), key=lambda kv: key(kv[0]))]


def process_data(entries: list[dict]) -> dict:
    """The cross-simulation views of the selected runs.

    ``entries``: dicts with ``name``, ``material``, ``family``, ``species``,
    ``temperature_K`` (K or None), ``descriptors``, ``groups`` (group sizes n of the run)
    and optionally ``params`` (the run's parameters) and ``n_max``.

    Returns ``n``, ``names``, ``groups`` (runs per material and temperature) and one
    dict per view (``spearman``, ``pooled``, ``arrhenius``, ``nu``); a view that the data
    cannot support carries ``reason`` instead of its arrays.
    """
    out: dict = {"n": len(entries), "names": [e["name"] for e in entries], "groups": _material_groups(entries)}
    out["spearman"] = _spearman(entries)
    out["pooled"] = _pooled(entries)
    out["arrhenius"] = _arrhenius(entries)
    rows = [{**e["descriptors"], "material": e["material"]} for e in entries]
    nv = desc.nu_vs_nu0(rows) if rows else None
    out["nu"] = {"labels": [e["name"] for e in entries],
                 "nu": nv.nu_THz.astype(np.float32) if nv else np.zeros(0), "nu0": nv.nu0_THz.astype(np.float32) if nv else np.zeros(0)}
    if nv is not None and not nv.valid.any():
        out["nu"]["reason"] = "no selected run has both ν and ν0 (it needs hops and a positive D)"
    return out


def _empty(title: str, reason: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=height, xaxis_visible=False, yaxis_visible=False,
                      annotations=[dict(text=reason, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                                        font=dict(size=13), align="center")])
    return fig


def _wrap(text: str, width: int = 70) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "<br>".join([*lines, line])


def spearman_figure(d: dict) -> go.Figure:
    sp = d["spearman"]
    if "reason" in sp:
        return _empty("Spearman correlation of the descriptors", _wrap(sp["reason"]))
    rho, p, n = np.asarray(sp["rho"], float), np.asarray(sp["p"], float), np.asarray(sp["n"], int)
    text = [[f"N={n[i, j]}" if i == j else
             ("ρ=n/a" if not np.isfinite(rho[i, j]) else f"ρ={rho[i, j]:.2f}") + ("" if not np.isfinite(p[i, j]) else f"<br>p={p[i, j]:.2g}")
             + f"<br>N={n[i, j]}" for j in range(len(rho))] for i in range(len(rho))]
    about = [[f"{DESCRIPTOR_HELP.get(a, a)}<br>vs {DESCRIPTOR_HELP.get(b, b)}" for b in sp["names"]] for a in sp["names"]]
    fig = go.Figure(go.Heatmap(
        z=rho, x=sp["names"], y=sp["names"], zmin=-1, zmax=1, colorscale="RdBu_r", text=text, texttemplate="%{text}",
        customdata=about, textfont=dict(size=9), hovertemplate="%{customdata}<br>%{text}<extra></extra>", colorbar=dict(title="ρ"),
    ))
    fig.update_layout(title=f"Spearman ρ, p-value and N of the descriptors ({sp['runs']} runs)", height=600,
                      xaxis_title="descriptor", yaxis_title="descriptor", margin=dict(l=180, r=20, t=50, b=160))
    return fig


def pooled_pdf_figure(d: dict) -> go.Figure:
    pooled = d["pooled"]
    if "reason" in pooled:
        return _empty("pdf of n pooled over the selected runs", _wrap(pooled["reason"]))
    fig = go.Figure()
    n_max = pooled["n_max"]
    fams = pooled["families"]
    for fam, p in fams.items():
        if fam != "all" and list(p.get("counts", [])) == list(fams["all"].get("counts", [])) and len(fams) == 2:
            continue  # one family only: its pdf is the "all" one
        n = list(np.asarray(p["n"], int))
        y = list(np.asarray(p["p"], float))
        over = p.get("overflow") or 0
        # Old documents: overflow is a count left out of p; new ones: a share of all groups.
        share = float(over) if isinstance(over, float) and over <= 1 else float(over) / max(1, sum(p.get("counts", [])) + over)
        fig.add_trace(go.Bar(x=[*n, n_max + 1], y=[*y, share], name=f"{fam} ({int(sum(p.get('counts', [])))} groups)",
                             hovertemplate="n=%{x}<br>p=%{y:.3g}<extra>" + fam + "</extra>"))
        fit = _fit_of(p)
        if fit is not None:
            x = np.linspace(2, n_max, 100)
            label = f"{fam}: {fit['A']:.3g} exp(-{fit['b']:.3g} n)"
            if fit.get("b_ci95"):
                label += f", b in [{fit['b_ci95'][0]:.3g}, {fit['b_ci95'][1]:.3g}]"
            elif np.isfinite(fit["b_err"]):
                label += f", b ± {1.96 * fit['b_err']:.2g} (95 %)"
            fig.add_trace(go.Scatter(x=x, y=fit["A"] * np.exp(-fit["b"] * x), mode="lines", line=dict(dash="dash"), name=label))
    fig.update_layout(title=f"pdf of n pooled over the selected runs ({pooled['groups']} groups)", height=440, barmode="group",
                      xaxis=dict(title="n (concerted hop events per group)", tickvals=[*range(1, n_max + 1, max(1, n_max // 10)), n_max + 1],
                                 ticktext=[*map(str, range(1, n_max + 1, max(1, n_max // 10))), f"> {n_max}"]),
                      yaxis_title="probability (share of all groups)", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def arrhenius_figure(d: dict) -> go.Figure:
    arr = d["arrhenius"]
    if not arr["fits"]:
        return _empty("Arrhenius plot of the tracer D", _wrap("; ".join(arr["reasons"]) or "no runs selected"))
    fig = go.Figure()
    for m, a in arr["fits"].items():
        pts = a["points"]
        x, y = np.array([q[0] for q in pts]), np.array([q[1] for q in pts])
        lo, hi = np.array([q[2] for q in pts]), np.array([q[3] for q in pts])
        bars = np.isfinite(lo) & np.isfinite(hi)
        err = dict(type="data", symmetric=False, array=np.where(bars, hi - y, 0), arrayminus=np.where(bars, y - lo, 0), visible=bool(bars.any()))
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=f"{m} tracer D", error_y=err, text=[q[4] for q in pts],
                                 hovertemplate="%{text}<br>1000/T=%{x:.3f} 1/K<br>D=%{y:.3g} cm²/s<extra></extra>"))
        if np.isfinite(a["Ea_eV"]):
            xs = np.linspace(x.min(), x.max(), 50)
            ys = a["D0_cm2_s"] * np.exp(-a["Ea_eV"] / (KB_EV_PER_K * 1000.0 / xs))
            ea = (f"Ea = {a['Ea_eV']:.3f} ± {a['Ea_ci95_halfwidth_eV']:.3f} eV (95 %)" if np.isfinite(a["Ea_ci95_halfwidth_eV"])
                  else f"Ea = {a['Ea_eV']:.3f} eV (no interval: 2 points)")
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{m}: {ea}, {a['n_temperatures']} T"))
    fig.update_layout(title="Arrhenius plot of the tracer D", height=440, xaxis_title="1000 / T (1/K)",
                      yaxis_title="D tracer (cm²/s)", yaxis_type="log", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def nu_figure(d: dict) -> go.Figure:
    if d["nu"].get("reason") or not len(d["nu"]["nu"]):
        return _empty("Hopping frequency ν against ν0 = 6 D / Δr²", _wrap(d["nu"].get("reason") or "no runs selected"))
    nu, nu0 = np.asarray(d["nu"]["nu"], float), np.asarray(d["nu"]["nu0"], float)
    fig = go.Figure(go.Scatter(x=nu, y=nu0, mode="markers", text=d["nu"]["labels"], name="runs",
                               hovertemplate="%{text}<br>ν=%{x:.3g} THz<br>ν0=%{y:.3g} THz<extra></extra>"))
    ok = np.isfinite(nu) & np.isfinite(nu0) & (nu > 0) & (nu0 > 0)
    lo, hi = min(nu[ok].min(), nu0[ok].min()) / 2, max(nu[ok].max(), nu0[ok].max()) * 2
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="red"), name="ν0 = ν"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[10 * lo, 10 * hi], mode="lines", line=dict(color="blue"), name="ν0 = 10 ν"))
    fig.update_layout(title="Hopping frequency ν against the dilute-limit ν0 = 6 D / Δr²", height=440,
                      xaxis_title="ν (THz)", yaxis_title="ν0 (THz)", xaxis_type="log", yaxis_type="log",
                      margin=dict(l=60, r=20, t=50, b=50))
    return fig


VIEWS = ("spearman", "pdf", "arrhenius", "nu")


def data_csv(d: dict, view: str) -> str:
    """The numbers behind one view as CSV text (units in the column names); a view the
    runs do not support gives its reason as a ``#`` comment line."""
    import io

    from dashboard import csv_safe

    buf = io.StringIO()
    w = csv_safe.writer(buf)  # run and material names are the users'
    if view == "spearman":
        sp = d["spearman"]
        if "reason" in sp:
            return f"# {sp['reason']}\n"
        w.writerow(["descriptor_a", "descriptor_b", "rho", "p_value", "n_runs"])
        for i, a in enumerate(sp["names"]):
            for j, b in enumerate(sp["names"]):
                if j > i:
                    w.writerow([a, b, sp["rho"][i, j], sp["p"][i, j], int(sp["n"][i, j])])
    elif view == "pdf":
        pooled = d["pooled"]
        if "reason" in pooled:
            return f"# {pooled['reason']}\n"
        w.writerow(["family", "n", "probability", "groups"])
        for fam, p in pooled["families"].items():
            for n, prob, c in zip(p["n"], p["p"], p.get("counts", [None] * len(p["n"]))):
                w.writerow([fam, int(n), float(prob), None if c is None else int(c)])
            w.writerow([fam, f">{pooled['n_max']}", p.get("overflow"), p.get("overflow_count", "")])
    elif view == "arrhenius":
        arr = d["arrhenius"]
        for r in arr["reasons"]:
            w.writerow([f"# {r}"])
        w.writerow(["material", "run", "inverse_T_1000_per_K", "D_tracer_cm2_s", "D_ci95_low_cm2_s", "D_ci95_high_cm2_s",
                    "Ea_eV", "Ea_ci95_halfwidth_eV", "D0_cm2_s"])
        for m, a in arr["fits"].items():
            for x, D, lo, hi, name in a["points"]:
                w.writerow([m, name, x, D, lo, hi, a["Ea_eV"], a["Ea_ci95_halfwidth_eV"], a["D0_cm2_s"]])
    elif view == "nu":
        if d["nu"].get("reason"):
            return f"# {d['nu']['reason']}\n"
        w.writerow(["run", "nu_THz", "nu0_THz"])
        for name, nu, nu0 in zip(d["nu"]["labels"], d["nu"]["nu"], d["nu"]["nu0"]):
            w.writerow([name, float(nu), float(nu0)])
    else:
        raise ValueError(f"unknown view {view!r} (one of {', '.join(VIEWS)})")
    return buf.getvalue()
