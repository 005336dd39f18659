"""Ports picked one after the other for listeners that bind them later are all different.

`his up` picks two ports per service before any of them binds; the kernel may offer a port it
just released again, and two services planned on one port made a start fail ("address already
in use")."""

from __future__ import annotations

from his.infra.nats import free_port


def test_ports_handed_out_one_after_the_other_are_distinct() -> None:
    ports = [free_port() for _ in range(1_000)]
    assert len(set(ports)) == len(ports)
