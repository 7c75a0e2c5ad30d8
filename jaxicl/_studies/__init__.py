"""The built-in studies, by the names sweep files and the command line use."""

from ._feature_learning import FeatureLearning
from ._full_allocation import FullAllocation
from ._reduced_allocation import ReducedAllocation


STUDIES = {
    "reduced-allocation": ReducedAllocation,
    "full-allocation": FullAllocation,
    "feature-learning": FeatureLearning,
}
