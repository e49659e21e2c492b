"""The pdf of the number n of concerted hops (paper Fig. 4): the observed pdf, the share
of groups beyond n_max as a separate bar, the null model's band (what chance alone gives,
when the engine provides it), the exponential fit with its interval or the reason there
is none, and the counts of the two n = 2 mechanisms."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _ci(fit, name) -> tuple[float, float] | None:
    """A fit parameter's 95 % interval: the engine's own, else +-1.96 standard errors."""
    ci = getattr(fit, f"{name}_ci95", None)
    if ci is not None:
        return _f(ci[0]), _f(ci[1])
    err = _f(getattr(fit, f"{name}_err", None))
    v = _f(getattr(fit, name, None))
    return (v - 1.96 * err, v + 1.96 * err) if np.isfinite(err) and np.isfinite(v) else None


def process_data(dist, mechanisms: dict | None = None, concertedness=None) -> dict:
    """From an :class:`~iondiff_core.distribution.NDistribution` (one run or pooled) and,
    when the engine has it, the null model of ``result.concertedness``."""
    n = np.asarray(dist.n, int)
    counts = np.asarray(dist.counts, int)
    fit = getattr(dist, "fit", None)
    fit_ok = fit is not None and np.isfinite(_f(getattr(fit, "A", None))) and np.isfinite(_f(getattr(fit, "b", None)))
    notes = []
    note = getattr(dist, "fit_note", None)
    if note is None and fit is not None:
        note = getattr(fit, "reason", "")  # engine before issue 8
    if note:
        notes.append(("fit of f(n) = A exp(-b n): " if not fit_ok else "fit: ") + note)
    n_points = int(getattr(fit, "n_points", 0) or 0) if fit is not None else 0
    if fit_ok and n_points and n_points <= 3 and not note:
        notes.append(f"the exponential is fitted to only {n_points} points (n >= 2 with groups): two parameters "
                     "through so few points say little about an exponential law")
    # Groups beyond n_max: a share of all groups (engine >= issue 8) or a count (before).
    if getattr(dist, "overflow_count", None) is not None:
        over_count = int(dist.overflow_count)
        over_share = _f(dist.overflow)
    else:
        over_count = int(_f(getattr(dist, "overflow", 0)) or 0)
        total = counts.sum() + over_count
        over_share = over_count / total if total else 0.0
    if getattr(dist, "percolated", False):
        notes.append("the groups percolate: one group holds most hops, so n is not meaningful here")
    n_fit = np.linspace(2, max(int(n.max()), 2), 200)
    out = {
        "n": n, "p": np.asarray(dist.p, np.float32), "counts": counts,
        "overflow_share": over_share, "overflow_count": over_count, "n_max": int(n.max()),
        "fit_ok": bool(fit_ok), "n_fit": n_fit.astype(np.float32),
        "p_fit": (fit(n_fit) if fit_ok else np.full_like(n_fit, np.nan)).astype(np.float32),
        "A": _f(getattr(fit, "A", None)), "b": _f(getattr(fit, "b", None)),
        "A_ci": _ci(fit, "A") if fit_ok else None, "b_ci": _ci(fit, "b") if fit_ok else None,
        "mean_n": _f(dist.mean_n), "std_n": _f(dist.std_n),
        "mean_n_ci": tuple(map(_f, dist.mean_n_ci95)) if getattr(dist, "mean_n_ci95", None) is not None else None,
        "mechanisms": mechanisms or {}, "notes": notes, "null": None,
    }
    null_p = getattr(concertedness, "null_p", None)
    null_ci = getattr(concertedness, "null_p_ci95", None)
    if null_p is not None and null_ci is not None:
        k = min(len(null_p), len(n))
        out["null"] = {"p": np.asarray(null_p, float)[:k], "lo": np.asarray(null_ci, float)[0, :k],
                       "hi": np.asarray(null_ci, float)[1, :k], "overflow": _f(getattr(concertedness, "null_overflow", 0.0))}
    return out


def _range(v: float, ci) -> str:
    return f"{v:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and all(np.isfinite(ci)) else f"{v:.3g}"


def fit_label(d: dict) -> str:
    if not d["fit_ok"]:
        return "no exponential fit" + (f" ({d['notes'][0]})" if d["notes"] else "")
    has_ci = any(ci and all(np.isfinite(ci)) for ci in (d["A_ci"], d["b_ci"]))
    return f"f(n) = A exp(-b n): A = {_range(d['A'], d['A_ci'])}, b = {_range(d['b'], d['b_ci'])}" + (" (95 %)" if has_ci else "")


def data_table(d: dict) -> dict:
    """Observed pdf per n (and the overflow bin as n = n_max + 1), the null band and the fit."""
    n = np.r_[d["n"], d["n_max"] + 1]
    cols = {"n": n, "label": [str(v) for v in d["n"]] + [f"> {d['n_max']}"],
            "groups": np.r_[d["counts"], d["overflow_count"]], "p_observed": np.r_[d["p"], d["overflow_share"]]}
    if d["null"] is not None:
        k = len(d["null"]["p"])
        pad = np.full(len(n) - k - 1, np.nan)
        cols.update({"p_null_mean": np.r_[d["null"]["p"], pad, d["null"]["overflow"]],
                     "p_null_2.5": np.r_[d["null"]["lo"], pad, np.nan], "p_null_97.5": np.r_[d["null"]["hi"], pad, np.nan]})
    if d["fit_ok"]:
        cols["p_fit"] = np.where(n >= 2, d["A"] * np.exp(-d["b"] * n.astype(float)), np.nan)
    return cols


def create_figure(d: dict) -> go.Figure:
    mech = d["mechanisms"]
    fig = make_subplots(rows=1, cols=2 if mech else 1, column_widths=[0.72, 0.28] if mech else None,
                        subplot_titles=("pdf of n", "n = 2 mechanisms") if mech else None)
    fig.add_trace(go.Bar(x=d["n"], y=d["p"], name="observed", marker_color="#1f77b4",
                         customdata=d["counts"], hovertemplate="n=%{x}<br>p=%{y:.3f}<br>%{customdata} groups<extra></extra>"), 1, 1)
    over_x = d["n_max"] + 1
    fig.add_trace(go.Bar(x=[over_x], y=[d["overflow_share"]], name=f"n > {d['n_max']} (beyond n_max)", marker_color="#7f7f7f",
                         customdata=[d["overflow_count"]],
                         hovertemplate=f"n > {d['n_max']}<br>share=%{{y:.3f}}<br>%{{customdata}} groups<extra></extra>"), 1, 1)
    if d["null"] is not None:
        nn = d["n"][: len(d["null"]["p"])]
        fig.add_trace(go.Scatter(x=np.r_[nn, nn[::-1]], y=np.r_[d["null"]["hi"], d["null"]["lo"][::-1]], fill="toself",
                                 fillcolor="rgba(255,127,14,0.25)", line=dict(width=0), name="chance (null model, 95 %)",
                                 hoverinfo="skip"), 1, 1)
        fig.add_trace(go.Scatter(x=nn, y=d["null"]["p"], mode="markers+lines", line=dict(color="#ff7f0e", dash="dot"),
                                 name="chance (null mean)"), 1, 1)
    if d["fit_ok"]:
        fig.add_trace(go.Scatter(x=d["n_fit"], y=d["p_fit"], mode="lines", name=fit_label(d), line=dict(color="#d62728")), 1, 1)
    ticks = list(d["n"]) + [over_x]
    labels = [str(v) for v in d["n"]] + [f">{d['n_max']}"]
    step = max(1, len(ticks) // 20)
    fig.update_xaxes(title_text="n (concerted hop events per group)", tickvals=ticks[::step] + [over_x],
                     ticktext=labels[::step] + [labels[-1]], row=1, col=1)
    fig.update_yaxes(title_text="probability (share of all groups)", row=1, col=1)
    if mech:
        fig.add_trace(go.Bar(x=list(mech), y=list(mech.values()), marker_color="#2ca02c", showlegend=False), 1, 2)
        fig.update_yaxes(title_text="pairs", row=1, col=2)
        fig.update_xaxes(title_text="mechanism", row=1, col=2)
    if np.isfinite(d["mean_n"]):
        mean = f"<n> (n ≥ 2) = {d['mean_n']:.2f}" + (
            f" [{d['mean_n_ci'][0]:.2f}, {d['mean_n_ci'][1]:.2f}]" if d["mean_n_ci"] else "") + f", sd {d['std_n']:.2f}"
    else:
        mean = "no concerted groups"
    fig.update_layout(title=mean, height=440, legend=dict(x=0.3, y=0.98), margin=dict(l=60, r=20, t=60, b=50), barmode="overlay")
    return fig
