"""The configuration of a local JetStream cluster node: durable, private, and aware of every peer."""

from __future__ import annotations

from pathlib import Path

from his.infra.nats_cluster import ClusterNode, node_config


def test_a_cluster_node_is_durable_binds_loopback_and_routes_to_every_peer() -> None:
    nodes = [ClusterNode(f"his-{i}", Path(f"/data/n{i}"), "127.0.0.1", 4220 + i, 6220 + i, 8220 + i) for i in (1, 2, 3)]
    routes = [n.route_url for n in nodes]
    text = node_config(nodes[1], routes, cluster="his")
    assert 'server_name: "his-2"' in text
    assert "listen: 127.0.0.1:4222" in text and "http: 127.0.0.1:8222" in text
    assert "sync_interval: always" in text
    assert 'store_dir: "/data/n2/store"' in text
    assert "listen: 127.0.0.1:6222" in text
    assert all(r in text for r in routes) and routes[0] == "nats-route://127.0.0.1:6221"
    assert "sync_interval: always" not in node_config(nodes[0], routes, cluster="his", sync_always=False)
