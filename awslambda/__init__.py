"""The AWS Lambda backend in one place: the launcher the coordinator uses (``awslambda.launcher``),
the function's entry point (``awslambda.handler``), and the kernel warm-up its image runs
(``awslambda.warmup``). The ``excamera lambda ...`` subcommands build on these.

It sits above ``pipeline`` (the handler registers the pipeline's worker operations) and below the
CLI.
"""
