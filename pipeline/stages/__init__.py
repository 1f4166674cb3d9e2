"""The built-in stages; each module registers its own on import (``pipeline.stage``)."""

from pipeline.stages import video  # noqa: F401
from pipeline.stages import vision  # noqa: F401  (imports no vision library until a stage runs)
