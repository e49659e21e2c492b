"""Everything the analyse page draws for one entry at one set of slider values.

Pure of Dash callbacks: pages/analyse.py memoises it on the shared disk cache, and
benchmarks/bench_sliders.py times it.
"""

from __future__ import annotations

from dashboard import analysis
from dashboard.config import Config
from dashboard.figures import (
    correlation_heatmaps,
    descriptor_table,
    hop_paths_3d,
    msd,
    n_distribution,
    timeline,
    van_hove,
)
from dashboard.storage import Library
from iondiff_core.errors import InputError


def analyse_views(cfg: Config, entry_id: str, sliders: dict, color_by: str = "group", group=None) -> dict:
    """Figures, descriptor table, warnings and status line of a library entry.

    Parameters
    ----------
    cfg : Config
        The deployment's folders.
    entry_id : str
        Library entry id.
    sliders : dict
        Slider parameters (silhouette_threshold, r_vib_A, reference_level, width_factor, n_max);
        only the cheap stages are recomputed for them.
    color_by : {"group", "ion"}
        Colouring of the 3D hop paths.
    group : int or None
        Concerted group to highlight in the 3D view and the timeline.
    """
    entry = Library(cfg.library_db).get(entry_id)
    if entry is None:
        raise InputError("this result is no longer in the library")
    result = analysis.result_for(cfg, entry, sliders)
    heat = correlation_heatmaps.process_data(result)
    return {
        "3d": hop_paths_3d.create_figure(hop_paths_3d.process_data(result, color_by, group)),
        "timeline": timeline.create_figure(timeline.process_data(result, group)),
        "heatmaps": correlation_heatmaps.create_figure(heat),
        "heat_data": {"factor": heat.get("factor"), "group_at": heat.get("group_at"), "empty": heat.get("empty")},
        "pdf": n_distribution.create_figure(n_distribution.process_data(result.distribution, result.mechanisms.counts(), result.concertedness)),
        "msd": msd.create_figure(msd.process_data(result)),
        "vanhove": van_hove.create_figure(van_hove.process_data(result)),
        "table": descriptor_table.process_data(result.descriptors, result.consistency.summary()),
        "warnings": result.warnings,
        "status": f"{entry.name}: {len(result.hops)} hops, {len(result.correlations.groups)} groups, "
                  f"{int((result.correlations.sizes > 1).sum())} concerted; reference level {result.reference_level:.4g}",
    }
