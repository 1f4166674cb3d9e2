"""One module per ``excamera`` subcommand (or family of them), each with ``register(sub)``;
shared helpers in ``excamera.commands.base``, which imports none of them."""
