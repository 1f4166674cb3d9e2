"""The coordinator: worker FSMs as data (``fsm``), the engine that drives them (``engine``), the
gRPC daemon (``server``), launchers (``launcher``), the public API (``api.run_job``), an
ExCamera-shaped job over stand-in operations (``shaped``) and the load benchmark (``bench``).
Importing this package does nothing else."""
