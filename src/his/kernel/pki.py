"""Workload identities: X.509 certificates carrying SPIFFE ids, and the TLS contexts built on them.

Every process of his proves who it is with a certificate whose URI SAN is a SPIFFE id
(``spiffe://his.local/service/patients``). On one machine ``his up`` runs a small local CA
(``LocalCA``) under the data directory; in a cluster the same three files (certificate, key, CA
bundle) come from SPIRE or cert-manager, and nothing else changes: a process only ever reads
``HIS_TLS_CERT``, ``HIS_TLS_KEY`` and ``HIS_TLS_CA``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "his.local"
#: Workload certificates are re-issued at every start; this bounds how long a leaked one works.
WORKLOAD_DAYS = 30
CA_DAYS = 10 * 365


def spiffe_id(name: str, kind: str = "service") -> str:
    """``spiffe://his.local/<kind>/<name>``: the identity a certificate carries."""
    return f"spiffe://{TRUST_DOMAIN}/{kind}/{name}"


def service_of(identity: str | None) -> str | None:
    """The service name in a ``spiffe://his.local/service/<name>`` id, else None."""
    prefix = f"spiffe://{TRUST_DOMAIN}/service/"
    if identity and identity.startswith(prefix) and "/" not in identity[len(prefix) :]:
        return identity[len(prefix) :]
    return None


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    """The SPIFFE ids (URI SANs with the spiffe scheme) of a certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]


def spiffe_id_of_pem(pem: bytes) -> str | None:
    """The single SPIFFE id of a PEM certificate (a SVID carries exactly one), else None."""
    try:
        ids = spiffe_ids(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None
    return ids[0] if len(ids) == 1 else None


@dataclass(frozen=True)
class WorkloadIdentity:
    """The three files a workload needs: its certificate, its private key, and the trusted CAs."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkloadIdentity | None:
        env = os.environ if environ is None else environ
        paths = [env.get(f"HIS_TLS_{part}") for part in ("CERT", "KEY", "CA")]
        if not all(paths):
            return None
        return cls(*(Path(p) for p in paths if p))

    def env(self) -> dict[str, str]:
        return {"HIS_TLS_CERT": str(self.cert), "HIS_TLS_KEY": str(self.key), "HIS_TLS_CA": str(self.ca)}

    @property
    def spiffe_id(self) -> str | None:
        return spiffe_id_of_pem(self.cert.read_bytes())

    def server_context(self) -> ssl.SSLContext:
        """A server context that demands a client certificate issued by the trusted CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that presents this identity and verifies the server against the CA."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA bundle) as PEM bytes, as gRPC wants them."""
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()


def monitor_context(ca: Path | None) -> ssl.SSLContext | None:
    """How to reach an https monitoring port: verify it against the CA (it asks for no client cert)."""
    return ssl.create_default_context(cafile=str(ca)) if ca else None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LocalCA:
    """A certificate authority kept in one directory (mode 0700), for a hospital on one machine."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_cert_path = directory / "ca.crt"
        self.ca_key_path = directory / "ca.key"
        self._cert: x509.Certificate | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None

    def ensure(self) -> LocalCA:
        """Load the CA, or create it on first use (and again when it nears expiry)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if self.ca_cert_path.exists() and self.ca_key_path.exists():
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc - _now() > dt.timedelta(
                days=WORKLOAD_DAYS
            ):
                self._cert, self._key = cert, key
                return self
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "his"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"his local CA ({TRUST_DOMAIN})"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_path, _pem_key(key))
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._cert, self._key = cert, key
        return self

    def issue(
        self,
        filename: str,
        identity: str,
        *,
        dns: Iterable[str] = ("localhost",),
        ips: Iterable[str] = ("127.0.0.1",),
        days: int = WORKLOAD_DAYS,
    ) -> WorkloadIdentity:
        """Issue a fresh key and certificate for ``identity`` (a SPIFFE id), usable as client and server."""
        if self._cert is None or self._key is None:
            self.ensure()
        assert self._cert is not None and self._key is not None
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity)]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "his")]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        out = WorkloadIdentity(self.dir / f"{filename}.crt", self.dir / f"{filename}.key", self.ca_cert_path)
        _write_private(out.key, _pem_key(key))
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return out
