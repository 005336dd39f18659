"""Zero trust between workloads under `his up`: every internal listener demands a certificate from
the hospital's CA, and NATS lets each service publish only its own events.

Against the shared hospital: the probes only connect, are refused and register one patient, and
its workloads are issued and checked exactly as a private hospital's (a hospital of its own cost
about 13 s to start and stop)."""

from __future__ import annotations

import asyncio
import os
import pwd
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from his.infra import acl
from his.kernel import bus
from his.kernel.pki import LocalCA, WorkloadIdentity, spiffe_id
from his.proto.patients.v1 import patients_pb2 as pb
from his.proto.patients.v1 import patients_pb2_grpc as pb_grpc
from tests.e2e.harness import Hospital
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def hospital(shared_hospital: Hospital) -> Hospital:
    return shared_hospital


def issued(hospital: Hospital, name: str) -> WorkloadIdentity:
    pki = hospital.data / "pki"
    return WorkloadIdentity(pki / f"{name}.crt", pki / f"{name}.key", pki / "ca.crt")


def impostor(tmp_path: Path, hospital: Hospital, name: str) -> ssl.SSLContext:
    """Trusts the hospital's CA (so the handshake reaches the server) but presents a certificate
    for the same SPIFFE id from another CA."""
    fake = LocalCA(tmp_path / "other-ca").ensure().issue(name, spiffe_id(name))
    ctx = ssl.create_default_context(cafile=str(hospital.data / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(fake.cert), str(fake.key))
    return ctx


def services(hospital: Hospital) -> dict[str, str]:
    st = hospital.state()["services"]
    assert isinstance(st, dict)
    return {name: str(s["url"]) for name, s in st.items() if name != "gateway"}


def test_internal_listeners_are_https_and_refuse_callers_without_a_certificate(hospital: Hospital) -> None:
    urls = services(hospital)
    # The ten services and the console, whose pages the gateway forwards to it over mutual TLS.
    assert len(urls) == 11 and all(u.startswith("https://127.0.0.1:") for u in urls.values())
    no_cert = ssl.create_default_context(cafile=str(hospital.data / "pki" / "ca.crt"))
    for name, url in urls.items():
        with pytest.raises(httpx.HTTPError):  # the TLS handshake fails: no certificate, no request
            httpx.get(f"{url}/healthz", verify=no_cert, timeout=5).raise_for_status()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url.replace('https', 'http', 1)}/healthz", timeout=5).raise_for_status()
        with hospital.internal() as client:
            assert client.get(f"{url}/healthz").json() == {"status": "ok", "service": name}


def test_a_certificate_from_another_ca_is_refused(hospital: Hospital, tmp_path: Path) -> None:
    ctx = impostor(tmp_path, hospital, "gateway")
    for url in services(hospital).values():
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/readyz", verify=ctx, timeout=5).raise_for_status()


def test_the_gateway_reaches_services_with_its_own_certificate(hospital: Hospital) -> None:
    headers = hospital.login()  # login and the token's JWKS check both cross an mTLS hop
    r = httpx.get(f"{hospital.gateway}/api/patients", params={"q": "nobody"}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert issued(hospital, "gateway").spiffe_id == "spiffe://his.local/service/gateway"


def test_a_services_certificate_is_refused_by_another_services_listener_unless_listed(hospital: Hospital) -> None:
    """Every workload holds a certificate from the CA; each listener admits only its callers
    (his.kernel.callers): billing may not read patients' API, nor its status, with any token."""
    urls = services(hospital)
    headers = hospital.login()  # a valid token changes nothing: the caller is refused first
    billing = httpx.Client(verify=issued(hospital, "billing").client_context(), timeout=5)
    with billing, hospital.internal() as operator:
        for path in ("/patients?q=nobody", "/status", "/metrics", "/healthz"):
            r = billing.get(f"{urls['patients']}{path}", headers=headers)
            assert r.status_code == 403, (path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["detail"].startswith("spiffe://his.local/service/billing may not call")
        # Allowlisted: every service fetches identity's keys (it verifies tokens itself).
        assert billing.get(f"{urls['identity']}/auth/jwks").status_code == 200
        assert billing.get(f"{urls['identity']}/users", headers=headers).status_code == 403
        # The operator reads the operations paths of every listener, and nothing else.
        assert operator.get(f"{urls['patients']}/status").status_code == 200
        assert operator.get(f"{urls['patients']}/patients?q=nobody", headers=headers).status_code == 403
        assert operator.get(f"{urls['console']}/readyz").status_code == 200
        assert operator.get(f"{urls['console']}/", headers=headers).status_code == 403


def test_what_his_up_keeps_under_the_data_directory_is_its_owners_alone(hospital: Hospital) -> None:
    """Logs, secrets, keys, checkpoints, NATS's configuration and store, delivered messages: no
    one but the owner of `his up` may read or enter them (PostgreSQL keeps ``pg`` private itself)."""
    data = hospital.data
    assert (data / "nats" / "nats.conf").exists() and (data / "logs" / "patients.log").exists()
    assert (data / "audit" / "checkpoints.jsonl").exists() and (data / "secrets" / "db-patients").exists()
    opened: list[str] = []
    for name in ("run", "logs", "secrets", "pki", "nats", "audit", "mail"):
        top = data / name
        # Run as root, the services' users (group his) pass through pki without listing it, and
        # the mail's ACL names the services that deliver e-mail (its group bits show the mask).
        private = {"pki": 0o710, "mail": 0o770}.get(name, 0o700) if os.geteuid() == 0 else 0o700
        if stat.S_IMODE(top.stat().st_mode) != private:
            opened.append(f"{name}: {stat.S_IMODE(top.stat().st_mode):o}")
        for path in top.iterdir():
            mode = stat.S_IMODE(path.lstat().st_mode)
            public = path.suffix == ".crt" or path.is_dir()  # behind the 0700 directory all the same
            if mode & 0o077 and not public:
                opened.append(f"{path.relative_to(data)}: {mode:o}")
    assert opened == []
    assert stat.S_IMODE((data / "pg").stat().st_mode) & 0o077 == 0
    if os.geteuid() == 0:
        named = {(e.tag, e.id) for e in acl.current(data / "mail") if e.tag in (acl.USER, acl.GROUP)}
        mailers = {pwd.getpwnam(f"his-{n}").pw_uid for n in ("notifications", "identity")}
        assert named == {(acl.USER, uid) for uid in mailers}
        others = [e for e in acl.current(data / "mail") if e.tag in (acl.GROUP_OBJ, acl.OTHER)]
        assert all(e.perm == 0 for e in others), others


def _status(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines)}


#: Run with a service's credentials: tries to open each path and says which it could read.
OPEN = """
import sys
for p in sys.argv[1:]:
    try:
        open(p).close()
        print("read", p)
    except PermissionError:
        print("refused", p)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="services run as users of their own only when his up runs as root")
def test_as_root_each_service_runs_as_its_own_user_and_cannot_open_another_services_key(hospital: Hospital) -> None:
    """Every process runs as his-<name> with no supplementary group; with exactly billing's
    credentials, a process reads billing's key and every certificate, and is refused patients'
    key, the CA's key, the operator's key and the database passwords."""
    pki = hospital.data / "pki"
    running = hospital.state()["services"]
    assert isinstance(running, dict)
    for name, proc in running.items():
        account = pwd.getpwnam(f"his-{name}")
        status = _status(int(proc["pid"]))
        assert status["Uid"] == [str(account.pw_uid)] * 4, (name, status["Uid"])
        assert status["Gid"] == [str(account.pw_gid)] * 4 and status["Groups"] == [], name
        assert (pki / f"{name}.key").stat().st_uid == account.pw_uid, name
    billing = pwd.getpwnam("his-billing")
    own, others = pki / "billing.key", [pki / "patients.key", pki / "ca.key", pki / "operator.key"]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            OPEN,
            str(own),
            str(pki / "patients.crt"),
            *map(str, others),
            str(hospital.data / "secrets" / "db-patients"),
        ],
        user=billing.pw_uid,
        group=billing.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    said = {path: verdict for verdict, _, path in (line.partition(" ") for line in probe.stdout.splitlines())}
    assert said[str(own)] == "read" and said[str(pki / "patients.crt")] == "read"
    assert [said[str(p)] for p in others] == ["refused"] * 3
    assert said[str(hospital.data / "secrets" / "db-patients")] == "refused"


def test_the_nats_monitoring_port_listens_on_the_loopback_address_only(hospital: Hospital) -> None:
    conf = (hospital.data / "nats" / "nats.conf").read_text()
    monitor = next(line for line in conf.splitlines() if line.startswith(("https:", "http:")))
    assert monitor.split()[1].startswith("127.0.0.1:"), monitor
    assert str(hospital.state()["nats_monitor_url"]).startswith("https://127.0.0.1:")


async def _connect(hospital: Hospital, **kw: object) -> NATS:
    return await nats.connect(
        str(hospital.state()["nats_url"]), connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0, **kw
    )


async def test_nats_requires_tls_with_a_certificate_from_the_ca(hospital: Hospital, tmp_path: Path) -> None:
    url = str(hospital.state()["nats_url"])
    assert url.startswith("tls://127.0.0.1:")

    async def quiet(_: Exception) -> None:
        return None

    no_cert = ssl.create_default_context(cafile=str(hospital.data / "pki" / "ca.crt"))
    for ctx in (no_cert, impostor(tmp_path, hospital, "patients")):
        with pytest.raises((ssl.SSLError, OSError, NatsError, asyncio.TimeoutError)):
            nc = await _connect(hospital, tls=ctx, error_cb=quiet)
            await nc.flush(timeout=2)  # a refused client certificate may surface only here
            await nc.close()


async def billing_probe(hospital: Hospital) -> tuple[NATS, list[Exception]]:
    """A connection with billing's certificate, and the errors NATS reports to it (refusals)."""
    errors: list[Exception] = []

    async def record(exc: Exception) -> None:
        errors.append(exc)

    url = str(hospital.state()["nats_url"])
    conn = await bus.connect(
        url,
        name="probe",
        identity=issued(hospital, "billing"),
        service="billing",
        error_cb=record,
        allow_reconnect=False,
    )
    return conn, errors


#: The subject billing tries to forge: a patient registered, which only the patients service publishes.
FORGED = "his.patients.patient.registered.v1"


async def last_seq(js: JetStreamContext) -> int:
    """The sequence of the stream's last message on the forged subject (0 if it has none)."""
    try:
        return (await js.get_last_msg("HIS_PATIENTS", FORGED)).seq or 0
    except NotFoundError:
        return 0


async def forged_since(js: JetStreamContext, seq: int) -> list[int]:
    """The sequences after ``seq`` of messages on the forged subject with the forged body ``{}``
    (a patient really registered meanwhile, by an earlier test's relay, has a body of its own)."""
    found: list[int] = []
    while True:
        try:
            msg = await js.get_msg("HIS_PATIENTS", seq=seq + 1, subject=FORGED, next=True)
        except NotFoundError:
            return found
        seq = msg.seq or seq + 1
        if msg.data == b"{}":
            found.append(seq)


async def test_a_service_may_publish_only_its_own_events(hospital: Hospital) -> None:
    billing, errors = await billing_probe(hospital)
    url = str(hospital.state()["nats_url"])
    operator = await bus.connect(url, name="probe-op", identity=hospital.operator())
    try:
        js = operator.jetstream()
        # The shared hospital's stream also takes other events meanwhile (records read, invitations
        # expiring, an earlier test's registrations): nothing forged may be among them.
        before = await last_seq(js)
        await billing.publish(FORGED, b"{}")
        await billing.flush(timeout=5)
        with pytest.raises(NatsError):  # a JetStream publish is refused outright, too
            await billing.jetstream().publish(FORGED, b"{}", timeout=2)
        # Replies meant for another service cannot be read either.
        await billing.subscribe("_INBOX_patients.>")
        await billing.flush(timeout=5)
        await asyncio.sleep(0.3)
        text = " ".join(str(e) for e in errors).lower()  # nats-py lower-cases the server's message
        assert 'publish to "his.patients.patient.registered.v1"' in text, text
        assert 'subscription to "_inbox_patients.>"' in text, text
        assert await forged_since(js, before) == []  # nothing forged landed
    finally:
        await billing.close()
        await operator.close()


async def test_a_service_may_not_pull_or_ack_another_services_consumer(hospital: Hospital) -> None:
    """Taking messages from another service's durable consumer and acking them would make that
    service miss its events: billing could swallow the audit service's access records."""
    billing, errors = await billing_probe(hospital)
    theirs = "HIS_PATIENTS.audit_patients_record_accessed"
    try:
        js = billing.jetstream(timeout=2)
        assert (await js.consumer_info("HIS_PATIENTS", "billing_patient_registered")).name  # its own: fine
        for subject in (
            f"$JS.API.CONSUMER.INFO.{theirs}",
            f"$JS.API.CONSUMER.MSG.NEXT.{theirs}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{theirs}",
            f"$JS.ACK.{theirs}.1.1.1.1700000000000000000.0",
        ):
            await billing.publish(subject, b"", reply=f"{bus.inbox_prefix('billing')}.probe")
        await billing.flush(timeout=5)

        async def refused() -> bool:
            return len(errors) >= 4

        await wait_for(refused, timeout=5, what="four permission violations")
        text = " ".join(str(e) for e in errors).lower()
        for verb in ("info", "msg.next", "durable.create"):
            assert f'publish to "$js.api.consumer.{verb}.{theirs.lower()}"' in text, text
        assert f'publish to "$js.ack.{theirs.lower()}' in text, text
    finally:
        await billing.close()


async def _get_contact(hospital: Hospital, creds: grpc.ChannelCredentials, patient_id: str) -> object:
    target = f"127.0.0.1:{hospital.grpc_port('patients')}"
    async with grpc.aio.secure_channel(target, creds) as ch:
        stub = pb_grpc.PatientDirectoryStub(ch)
        return await stub.GetContactDetails(pb.GetContactDetailsRequest(patient_id=patient_id), timeout=5)


def _creds(
    ident: WorkloadIdentity | None, ca: Path, foreign: WorkloadIdentity | None = None
) -> grpc.ChannelCredentials:
    use = foreign or ident
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=use.key.read_bytes() if use else None,
        certificate_chain=use.cert.read_bytes() if use else None,
    )


async def test_grpc_demands_a_certificate_from_the_ca_and_an_allowlisted_caller(
    hospital: Hospital, tmp_path: Path
) -> None:
    body = {
        "given_name": "Canan",
        "family_name": "Grpc-Probe",
        "birth_date": "1990-02-02",
        "sex": "female",
        "email": "canan@example.org",
    }
    r = httpx.post(f"{hospital.gateway}/api/patients", json=body, headers=hospital.login(), timeout=10)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    ca = hospital.data / "pki" / "ca.crt"

    answer = await _get_contact(hospital, _creds(issued(hospital, "notifications"), ca), pid)
    assert getattr(answer, "email", None) == "canan@example.org"

    with pytest.raises(grpc.aio.AioRpcError) as denied:  # a real service, not on this method's list
        await _get_contact(hospital, _creds(issued(hospital, "billing"), ca), pid)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(grpc.aio.AioRpcError) as no_cert:
        await _get_contact(hospital, _creds(None, ca), pid)
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake itself fails

    stranger = LocalCA(tmp_path / "foreign").ensure().issue("notifications", spiffe_id("notifications"))
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await _get_contact(hospital, _creds(None, ca, foreign=stranger), pid)
    assert foreign.value.code() == grpc.StatusCode.UNAVAILABLE
