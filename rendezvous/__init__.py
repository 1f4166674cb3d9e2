"""The rendezvous relay between workers: a pure in-memory pairing core (``core``) under a thin
``grpc.aio`` servicer (``server``), and the client workers and the coordinator use (``client``)."""
