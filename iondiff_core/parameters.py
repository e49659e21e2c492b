"""Every parameter of the method, with its METHOD.md default, in one place.

The parameters split into the *clustering* ones (expensive stage, part of its cache key)
and the *cheap* ones (silhouette threshold, r_vib, reference level, width factor, n_max
...), which can change without redoing the clustering.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from iondiff_core.errors import InputError

#: Parameters that change the clustering stage; the rest only change cheap stages.
CLUSTERING_FIELDS = (
    "species", "silhouette", "k_max", "k_max_limit", "k_patience", "kmeans_n_init", "voxel_A", "denoise_fs", "seed",
    "remove_drift", "window_frames", "window_sites", "window_min_frames",
)


@dataclass(frozen=True)
class Parameters:
    """Parameters of the analysis (METHOD.md).

    Parameters
    ----------
    species : str or None
        Mobile species; None picks the first of Li, Na, K, Ag, Cu, F, Cl, Br, I, O, H.
    silhouette : {"squared", "euclidean"}
        Silhouette distance. "squared" is the paper's eqs 7-9 (exact closed form,
        O(T K)); "euclidean" is scikit-learn's, as IonDiff uses (O(T^2), for comparison).
    silhouette_threshold : float
        If the best mean silhouette over K >= 2 is below this, K = 1 (slider).
    k_max : int or None
        Largest K tried. None chooses it from the data: K is raised until the
        silhouette has fallen for ``k_patience`` values past its maximum.
    k_max_limit : int or None
        Hard cap on K when ``k_max`` is None; None (default) = no cap. Only for
        reproducing the old behaviour (60): a cap silently merges the sites of an ion
        that visits more of them.
    k_patience : int
        With ``k_max=None``: how many K past the best one must score lower before stopping.
    kmeans_n_init : int
        k-means restarts per K (scikit-learn ``n_init``).
    voxel_A : float
        Voxel edge in Å of the weighted histogram that k-means clusters instead of
        every frame; 0 clusters every frame (slow, exact reference).
    window_frames : int
        Clustering runs per time window of at most this many frames, and the centres
        of the windows are stitched into one set per ion (:func:`iondiff_core.centres.select`),
        so the cost per ion-frame does not grow with the number of sites an ion visits.
        0 clusters each ion's whole run at once (the paper's per-ion clustering; its cost
        grows as the square of the sites visited).
    window_sites : int
        A window in which the ion dwells at more than this many sites is cut into shorter
        windows (equal parts, none shorter than ``window_min_frames``).
    window_min_frames : int
        Shortest window; runs shorter than ``window_frames`` are one window.
    r_vib_A : float
        Vibration radius in Å: a frame within it of a centre vibrates there (slider).
    denoise_fs : float
        Clustering runs on positions averaged over a sliding window of this many fs
        (odd number of frames; 0 = raw positions, the paper). Thermal vibration at
        hundreds of K is as wide as the site spacing in coarse AIMD; averaging over a
        few vibration periods separates the sites, while hops are still found on the
        raw positions. See docs/VALIDATION.md.
    hop_rule : {"cloud", "paper"}
        "paper": a frame vibrates at a centre only within ``r_vib_A`` of it.
        "cloud" (default): within the larger of ``r_vib_A`` and the centre's thermal
        cloud radius (``cloud_quantile`` of its frames' distances, capped at 45 % of the
        distance to the ion's nearest other centre), so hot ions are not called "in
        transit" at every vibration. See docs/VALIDATION.md.
    cloud_quantile : float
        Quantile of a centre's frame distances used by ``hop_rule="cloud"``.
    reference_level : "mean" or float
        Correlation level above which a pair of hops is concerted: "mean" of the
        random reference's off-diagonal correlations (paper), or a quantile in (0, 1)
        of them (slider).
    n_random : int
        Repetitions of the random reference.
    n_null : int
        Replicas of the null model (METHOD.md section 4b): each ion's hop train shifted
        circularly in time by its own random offset.
    random_width : {"own", "mean"}
        Width of each random reference event: the hop's own FWHM, or the mean hop
        duration for all (the paper).
    width_factor : float
        Multiplies every event's Gaussian FWHM (1 = the hop's duration) (slider).
    width_rule : {"padded", "duration"}
        FWHM of each event: "padded" (default), the transit's duration + 2 frames, from
        the last frame at A to the first at B, i.e. the whole motion (the transit found
        outside the vibration radius is shorter, and consecutive hops of a chain then
        fail to overlap); "duration", the transit's duration (the paper). See
        docs/METHOD.md and benchmarks/chains.py.
    pair_distance_A : float or None
        If set, a correlated pair is concerted only when the two hops come within this
        distance (Å, minimum image, between their start and end centres). None = the
        paper's purely temporal criterion. Useful when transits are so dense in time
        that the temporal groups percolate.
    n_max : int
        Largest n in the distribution of concerted hops (slider).
    mechanism_distance_A : float
        Distance in Å for the n = 2 mechanisms (vacancy following, knock-out).
    metastable_distance_A : float
        A centre farther than this (Å) from every reference-lattice site is metastable.
    reference_structure : str or None
        Structure file (POSCAR, CIF...) whose sites of the mobile species form the
        reference lattice; None uses the mobile ions' first-frame positions.
    msd_fit_start, msd_fit_end : float
        Fit window of the MSD, as fractions of the longest lag (which is half the run).
    ion_charge : float
        Charge of the mobile ion in e, for the Nernst-Einstein conductivity.
    seed : int
        Seed of k-means and of the random reference.
    remove_drift : bool
        Remove the framework's centre-of-mass drift before the analysis.
    """

    species: str | None = None
    silhouette: str = "squared"
    silhouette_threshold: float = 0.7
    k_max: int | None = None
    k_max_limit: int | None = None
    k_patience: int = 4
    kmeans_n_init: int = 10
    voxel_A: float = 0.1
    window_frames: int = 5000
    window_sites: int = 8
    window_min_frames: int = 1000
    denoise_fs: float = 300.0
    r_vib_A: float = 0.5
    hop_rule: str = "cloud"
    cloud_quantile: float = 0.95
    reference_level: str | float = "mean"
    n_random: int = 100
    n_null: int = 200
    random_width: str = "own"
    width_factor: float = 1.0
    width_rule: str = "padded"
    pair_distance_A: float | None = None
    n_max: int = 20
    mechanism_distance_A: float = 1.0
    metastable_distance_A: float = 1.0
    reference_structure: str | None = None
    msd_fit_start: float = 0.2
    msd_fit_end: float = 1.0
    ion_charge: float | None = None
    seed: int = 0
    remove_drift: bool = False

    def __post_init__(self):
        checks = [
            (self.silhouette in ("squared", "euclidean"), "silhouette must be 'squared' or 'euclidean'"),
            (0.0 <= self.silhouette_threshold <= 1.0, "silhouette_threshold must lie in [0, 1]"),
            (self.k_max is None or self.k_max >= 2, "k_max must be at least 2"),
            (self.k_max_limit is None or self.k_max_limit >= 2, "k_max_limit must be at least 2 or None"),
            (self.window_frames == 0 or self.window_frames >= 10, "window_frames must be 0 (whole run) or at least 10"),
            (self.window_sites >= 1, "window_sites must be at least 1"),
            (self.window_min_frames >= 10, "window_min_frames must be at least 10"),
            (self.kmeans_n_init >= 1, "kmeans_n_init must be at least 1"),
            (self.voxel_A >= 0, "voxel_A must be >= 0"),
            (self.r_vib_A > 0 and math.isfinite(self.r_vib_A), "r_vib_A must be > 0 Å (and finite)"),
            (self.hop_rule in ("cloud", "paper"), "hop_rule must be 'cloud' or 'paper'"),
            (self.denoise_fs >= 0, "denoise_fs must be >= 0 fs"),
            (0 < self.cloud_quantile <= 1, "cloud_quantile must lie in (0, 1]"),
            (
                self.reference_level == "mean"
                or (isinstance(self.reference_level, (int, float)) and 0 < float(self.reference_level) < 1),
                "reference_level must be 'mean' or a quantile in (0, 1)",
            ),
            (self.n_random >= 1, "n_random must be at least 1"),
            (self.n_null >= 1, "n_null must be at least 1"),
            (self.width_rule in ("duration", "padded"), "width_rule must be 'duration' or 'padded'"),
            (self.random_width in ("own", "mean"), "random_width must be 'own' or 'mean'"),
            (self.width_factor > 0 and math.isfinite(self.width_factor), "width_factor must be > 0 (and finite)"),
            (self.n_max >= 2, "n_max must be at least 2"),
            (self.pair_distance_A is None or 0 < self.pair_distance_A < math.inf, "pair_distance_A must be > 0 Å (and finite) or None"),
            (0 <= self.msd_fit_start < self.msd_fit_end <= 1, "need 0 <= msd_fit_start < msd_fit_end <= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"bad parameter: {message}")

    def replace(self, **changes) -> "Parameters":
        return dataclasses.replace(self, **changes)

    def clustering_key(self) -> dict:
        """The values that the expensive clustering stage depends on."""
        return {k: getattr(self, k) for k in CLUSTERING_FIELDS}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Parameters":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        return cls(**d)
