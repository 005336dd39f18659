"""The local CA issues SPIFFE workload identities; TLS contexts built on them demand client certs."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from his.kernel.pki import LocalCA, WorkloadIdentity, service_of, spiffe_id


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Serve one TLS connection; return the peer's URI SAN as the server saw it (None if refused)."""
    seen: list[str | None] = []

    async def handle(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        cert = w.get_extra_info("peercert") or {}
        seen.append(next((v for k, v in cert.get("subjectAltName", ()) if k == "URI"), None))
        w.write(b"ok")
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        data = await r.read()
        w.close()
        return seen[0] if data == b"ok" else None
    except (ssl.SSLError, ConnectionError):  # with TLS 1.3 the refusal may surface on either side
        return None
    finally:
        srv.close()


def test_issued_identity_carries_its_spiffe_id_and_private_key_is_private(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki").ensure()
    ident = ca.issue("patients", spiffe_id("patients"))
    assert ident.spiffe_id == "spiffe://his.local/service/patients"
    assert service_of(ident.spiffe_id) == "patients"
    assert service_of("spiffe://other.domain/service/patients") is None
    assert ident.key.stat().st_mode & 0o077 == 0
    assert (tmp_path / "pki").stat().st_mode & 0o077 == 0
    # The CA survives a restart: the same CA certificate is loaded, not replaced.
    before = ca.ca_cert_path.read_bytes()
    assert LocalCA(tmp_path / "pki").ensure().ca_cert_path.read_bytes() == before
    assert WorkloadIdentity.from_env(ident.env()) == ident


async def test_mutual_tls_accepts_only_certificates_from_the_ca(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki").ensure()
    server = ca.issue("patients", spiffe_id("patients"))
    caller = ca.issue("gateway", spiffe_id("gateway"))
    assert await handshake(server.server_context(), caller.client_context()) == spiffe_id("gateway")

    no_cert = ssl.create_default_context(cafile=str(server.ca))
    assert await handshake(server.server_context(), no_cert) is None

    stranger = LocalCA(tmp_path / "other").ensure().issue("gateway", spiffe_id("gateway"))
    foreign = ssl.create_default_context(cafile=str(server.ca))  # trusts our server, presents a foreign cert
    foreign.load_cert_chain(str(stranger.cert), str(stranger.key))
    assert await handshake(server.server_context(), foreign) is None
