"""excamera: fine-grained parallel VP8 encoding with explicit decoder state.

The user's entry point: the command-line interface (``excamera ...``, see ``excamera.cli``) and,
later, the public Python API, storage, TLS helpers and the pipeline language. This package imports
the ones below it (``codec``, ``coordinator``, ``rendezvous``, ``worker``), never the reverse.
Nothing heavy is imported here, so ``excamera --help`` stays instant.
"""

__version__ = "0.1.0"
