"""Typed clients of the services' gRPC contracts, shared like ``his.proto`` and ``his.events``.

Each contract has a Protocol (the port a service depends on), the real adapter over gRPC and an
in-memory fake for tests. A client knows only the contract, never the serving service's code.
"""
