"""The built-in stages; each module registers its own on import (``pipeline.stage``)."""
