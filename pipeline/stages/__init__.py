"""The built-in stages; each module registers its own on import (``pipeline.stage``)."""

from pipeline.stages import video  # noqa: F401
from pipeline.stages import vision  # noqa: F401  (imports no vision library until a stage runs)
from pipeline.stages import links  # noqa: F401  (Sprocket's link sources)
from pipeline.stages import sprocket  # noqa: F401  (Sprocket's stage names)
from pipeline.stages import stabilize  # noqa: F401  (video stabilisation; OpenCV on first use)
