"""The built-in stages; each module registers its own on import (``pipeline.stage``)."""

from pipeline.stages import video  # noqa: F401
