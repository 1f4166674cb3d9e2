"""Sprocket-style video pipelines (SoCC 2018) on the excamera runtime: the pipespec language,
the planner and its delivery functions, the stage registry and the stages, the schedulers."""
