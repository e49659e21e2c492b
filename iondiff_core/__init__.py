"""iondiff_core: find ion hops in MD trajectories and measure how many ions hop together.

The method is López, Rurali and Cazorla, J. Am. Chem. Soc. 2024, 146, 8269, with the
definitions fixed in the project's METHOD.md. Stages, each in the module named after it:

``io`` (read) -> ``trajectory`` (unwrap) -> ``centres`` (k-means + silhouette, expensive)
-> ``hops`` -> ``correlations`` (timeline, smoothing, reference, groups, mechanisms)
-> ``distribution`` (pdf of n and its fit) -> ``transport`` / ``descriptors``.
``pipeline`` composes them with a disk cache for the expensive stage; ``batch`` analyses
many simulations and compares them; ``cli`` is the command line (``iondiff``, the same
as ``python -m iondiff_core``). The engine never imports the dashboard.
"""

from iondiff_core.errors import InputError
from iondiff_core.parameters import Parameters
from iondiff_core.trajectory import Trajectory, unwrap

__all__ = ["InputError", "Parameters", "Trajectory", "unwrap"]
__version__ = "0.1.0"
