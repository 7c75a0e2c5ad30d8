"""The built-in studies (named for sweep files and the command line by `jaxicl._registry`)."""

from ._feature_learning import FeatureLearning as FeatureLearning
from ._full_allocation import FullAllocation as FullAllocation
from ._reduced_allocation import ReducedAllocation as ReducedAllocation
