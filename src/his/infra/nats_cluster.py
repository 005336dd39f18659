"""A JetStream cluster of several ``nats-server`` processes on one machine.

Each node has its own client, route and monitoring ports and its own store; JetStream uses file
storage with ``sync_interval: always``, as the single embedded server does. Every node lists
every node's route, so the cluster forms whatever the start order. A stream with ``replicas: 3``
on such a cluster keeps working when any one node dies: the survivors elect a new leader.

Routes are plain TCP bound to the given host (127.0.0.1 by default); this is for local scale-out
proofs and tests. A production cluster (deploy/) adds TLS on routes and clients.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from his.infra.nats import binary, free_port
from his.infra.procs import ManagedProcess, ServerStartError
from his.kernel.json import Json, JsonObject, object_of


@dataclass
class ClusterNode:
    """One server of the cluster: its ports and store stay the same across restarts."""

    name: str
    workdir: Path
    host: str
    port: int
    route_port: int
    monitor_port: int
    proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.route_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def node_config(
    node: ClusterNode, routes: list[str], *, cluster: str, sync_always: bool = True, advertise: str = ""
) -> str:
    """The configuration file of one node."""
    return f"""# written by his; regenerated at every start
server_name: {json.dumps(node.name)}
listen: {node.host}:{node.port}
http: {node.host}:{node.monitor_port}
max_payload: 1MB
jetstream {{
  store_dir: {json.dumps(str(node.workdir / "store"))}
  {"sync_interval: always" if sync_always else "# sync_interval left at the server default (unsafe)"}
  max_memory_store: 256MB
}}
cluster {{
  name: {json.dumps(cluster)}
  listen: {node.host}:{node.route_port}
  routes: {json.dumps(routes)}
  {f"advertise: {json.dumps(advertise)}" if advertise else ""}
}}
"""


def monitor(node: ClusterNode, path: str, *, timeout: float = 1.0) -> JsonObject:
    """GET one of the node's monitoring endpoints (``/jsz``, ``/varz``, ``/routez``...): a JSON object."""
    with urllib.request.urlopen(f"{node.monitor_url}{path}", timeout=timeout) as resp:  # noqa: S310
        doc: Json = json.load(resp)
    return object_of(doc)


def _healthy(node: ClusterNode) -> bool:
    """JetStream is up on the node and it is current with the cluster's meta leader."""
    try:
        with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=0.5) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class NatsCluster:
    """A local JetStream cluster. ``start()`` it, connect to ``urls``, ``stop()`` it."""

    workdir: Path
    size: int = 3
    host: str = "127.0.0.1"
    name: str = "his"
    sync_always: bool = True
    nodes: list[ClusterNode] = field(default_factory=list)
    #: The route URLs a node dials (default: every node's route port). A test gives each node
    #: its own path to each peer (e.g. through a proxy it can cut) to partition the cluster.
    routes_for: Callable[[ClusterNode], list[str]] | None = None
    #: The route address each node tells its peers (default: its own); peers that learn of a
    #: node through another dial it there, so a test routing through proxies points it at none.
    route_advertise: str = ""

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [
                ClusterNode(
                    f"{self.name}-{i}",
                    self.workdir / f"n{i}",
                    self.host,
                    free_port(self.host),
                    free_port(self.host),
                    free_port(self.host),
                )
                for i in range(1, self.size + 1)
            ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL: give them all to a client so it can fail over."""
        return [n.url for n in self.nodes]

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in cluster {self.name!r}")

    def spawn(self, node: ClusterNode) -> None:
        """Start one node's process (its store is kept), without waiting for it."""
        node.workdir.mkdir(parents=True, exist_ok=True)
        conf = node.workdir / "nats.conf"
        routes = self.routes_for(node) if self.routes_for else [n.route_url for n in self.nodes]
        conf.write_text(
            node_config(node, routes, cluster=self.name, sync_always=self.sync_always, advertise=self.route_advertise)
        )
        node.proc = ManagedProcess.spawn(node.name, [binary(), "-c", str(conf)], log_file=node.workdir / "nats.log")

    def wait_healthy(self, nodes: list[ClusterNode] | None = None, *, timeout: float = 30.0) -> None:
        """Wait until each node (default: each running one) reports JetStream healthy."""
        waiting = [n for n in (nodes if nodes is not None else self.nodes) if n.proc is not None]
        deadline = time.monotonic() + timeout
        while waiting:
            for n in waiting:
                if n.proc is not None and n.proc.poll() is not None:
                    raise ServerStartError(f"{n.name} exited (code {n.proc.returncode}): {n.proc.tail()}")
            waiting = [n for n in waiting if not _healthy(n)]
            if waiting and time.monotonic() > deadline:
                raise ServerStartError(f"{', '.join(n.name for n in waiting)} not healthy within {timeout:.0f}s")
            if waiting:
                time.sleep(0.05)

    def start(self, *, timeout: float = 30.0) -> NatsCluster:
        """Start every node and wait until the cluster has formed with JetStream ready."""
        try:
            for n in self.nodes:
                self.spawn(n)
            self.wait_healthy(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, node: ClusterNode) -> int:
        """SIGKILL one node (no clean shutdown, no leadership hand-over) and reap it."""
        assert node.proc is not None, f"{node.name} is not running"
        node.proc.signal(signal.SIGKILL)
        node.proc.popen.wait(10)
        code = node.proc.returncode
        assert code is not None
        return code

    def stop(self) -> None:
        for n in self.nodes:
            if n.proc is not None:
                n.proc.stop(timeout=10)
