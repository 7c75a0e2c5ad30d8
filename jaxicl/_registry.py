"""The built-in studies and experiments by the names sweep files and the command line use:
the one place names meet Modules and records (the library below takes them as arguments)."""

from ._experiments._feature_learning import EXPERIMENT as FEATURE_LEARNING
from ._experiments._full_vs_reduced import EXPERIMENT as FULL_VS_REDUCED
from ._experiments._overlapping_tasks import EXPERIMENT as OVERLAPPING_TASKS
from ._experiments._paired_heads import EXPERIMENT as PAIRED_HEADS
from ._experiments._task_allocation import EXPERIMENT as TASK_ALLOCATION
from ._studies import FeatureLearning, FullAllocation, ReducedAllocation
from ._sweeps import _file
from ._sweeps._plan import SweepPlan


STUDIES = {
    study.registry_name: study for study in (ReducedAllocation, FullAllocation, FeatureLearning)
}
EXPERIMENTS = {
    e.name: e
    for e in (TASK_ALLOCATION, FULL_VS_REDUCED, PAIRED_HEADS, OVERLAPPING_TASKS, FEATURE_LEARNING)
}


def load_sweep(path) -> SweepPlan:
    """Read and validate a sweep file (its `study` a built-in name or `package.module:Class`)."""
    return _file.load_sweep(path, STUDIES)
