"""Everything a study file needs, in one import (docs/writing-a-study.md):

    from study.api import Budget, Factor, Level, Metric, Param, SearchSpace, Study, difference

Our own six studies (``studies/``) are written with exactly these names.
"""
from search_spaces import Param, SearchSpace
from study.spec import (DESIGNS, Budget, Contrast, DegradedCell, Factor, InvalidCell, Level, Metric, Study,
                        difference, interaction)
from study.upstream import Data, Stage, Upstream, Use

__all__ = ["DESIGNS", "Budget", "Contrast", "Data", "DegradedCell", "Factor", "InvalidCell", "Level", "Metric", "Param",
           "SearchSpace", "Stage", "Study", "Upstream", "Use", "difference", "interaction"]
