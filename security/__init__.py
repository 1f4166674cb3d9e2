"""Who may talk to whom, on the ground floor (imports nothing else of the project).

- ``security.tls``: a certificate authority per deployment and the gRPC credentials for mutual
  TLS; bundles for a server, a worker (client certificate only, never a server or CA key) and a
  client;
- ``security.tokens``: per-job keys and per-worker, per-task tokens.
"""
