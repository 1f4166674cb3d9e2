"""The worker runtime: dials out to the coordinator (``runtime``), runs registered operations
(``ops``; stand-ins for the codec's in ``fakecodec``). No I/O at import time."""
