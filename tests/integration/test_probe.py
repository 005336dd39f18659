"""The kubelet exec probe (his.kernel.probe) against a real mutual-TLS listener."""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from his.kernel import probe
from his.kernel.pki import LocalCA, WorkloadIdentity, spiffe_id


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[int, WorkloadIdentity]]:
    """A listener that, like every service's, requires a client certificate from the CA."""
    ca = LocalCA(tmp_path / "ca").ensure()
    server_id = ca.issue("billing", spiffe_id("billing"), dns=("localhost", "billing"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(server_id.ca))
    ctx.load_cert_chain(server_id.cert, server_id.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], server_id
    httpd.shutdown()
    httpd.server_close()


def test_probe_passes_with_the_pods_own_identity(listener: tuple[int, WorkloadIdentity]) -> None:
    port, ident = listener
    env = {**ident.env(), "HIS_HTTP_PORT": str(port)}
    assert probe.probe("/healthz", env) == 200
    assert probe.probe("/readyz", env) == 503


def test_a_kubelet_style_https_probe_is_refused(listener: tuple[int, WorkloadIdentity]) -> None:
    """Why services need the exec probe: HTTPS without a client certificate fails the handshake."""
    port, ident = listener
    ctx = ssl.create_default_context(cafile=str(ident.ca))
    conn = http.client.HTTPSConnection("localhost", port, timeout=3, context=ctx)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        conn.request("GET", "/healthz")
        conn.getresponse()
    conn.close()
    assert probe.probe("/healthz", {"HIS_HTTP_PORT": str(port)}) == 0  # and plain HTTP gets nothing either


def test_probe_with_a_certificate_from_another_ca_is_refused(
    listener: tuple[int, WorkloadIdentity], tmp_path: Path
) -> None:
    port, _ = listener
    stranger = LocalCA(tmp_path / "other").ensure().issue("billing", spiffe_id("billing"))
    assert probe.probe("/healthz", {**stranger.env(), "HIS_HTTP_PORT": str(port)}) == 0


def test_the_gateways_probe_asks_its_operations_listener(listener: tuple[int, WorkloadIdentity]) -> None:
    """The gateway's public port (HIS_HTTP_PORT) is for clients; its probes go to HIS_OPS_PORT."""
    port, ident = listener
    env = {**ident.env(), "HIS_HTTP_PORT": "1", "HIS_OPS_PORT": str(port)}
    assert probe.probe("/healthz", env) == 200
