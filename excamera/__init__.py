"""excamera: fine-grained parallel VP8 encoding with explicit decoder state, and Sprocket-style
video pipelines, on thousands of tiny workers.

The top floor: what a user calls. ``excamera.cli`` is the ``excamera`` command line (one module per
subcommand in ``excamera.commands``); ``excamera.aot_build`` compiles the codec's kernels. Every
other package lies below this one and never imports it (docs/design/architecture.md). Nothing
heavy is imported here, so ``excamera --help`` stays instant.
"""

__version__ = "0.1.0"
