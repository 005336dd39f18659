"""Running `his up` as an operator would, for the end-to-end tests."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from his.cli.state import operator_identity
from his.kernel.pki import WorkloadIdentity
from tests.support.waiting import wait_until

HIS = str(Path(sys.executable).parent / "his")
ADMIN = ("chief@hospital.example", "ward seven night shift 2026")


def his_env(data: Path, gateway_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(
        {
            "HIS_DATA_DIR": str(data),
            "HIS_GATEWAY_PORT": str(gateway_port),
            "HIS_ADMIN_EMAIL": ADMIN[0],
            "HIS_ADMIN_PASSWORD": ADMIN[1],
        },
        **extra,
    )
    return env


class Hospital:
    def __init__(self, data: Path, port: int, **env: str) -> None:
        self.data, self.port, self.env = data, port, env
        self.log = data.parent / f"up-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        seen = self.log.read_text(errors="replace").count("his is up") if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [HIS, "up"],
            env=his_env(self.data, self.port, **self.env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count("his is up") <= seen:
            assert self.proc.poll() is None, f"his up exited early:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"his up not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.data / "run" / "state.json").read_text()))

    def url(self, service: str) -> str:
        services = self.state()["services"]
        assert isinstance(services, dict)
        return str(services[service]["url"])

    def grpc_port(self, service: str) -> int:
        """The port of ``service``'s gRPC listener (as `his up` recorded it)."""
        services = self.state()["services"]
        assert isinstance(services, dict)
        return int(services[service]["grpc_port"])

    def operator(self) -> WorkloadIdentity:
        ident = operator_identity(self.data)
        assert ident is not None, "his up issued no operator certificate"
        return ident

    def internal(self) -> httpx.Client:
        """A client for the services' internal (mutual TLS) listeners, as the operator."""
        return httpx.Client(verify=self.operator().client_context(), timeout=5)

    def pids(self) -> list[int]:
        st = self.state()
        services = st["services"]
        assert isinstance(services, dict)
        infra = st["infra_pids"]
        assert isinstance(infra, list)
        forks = [int(str(st["forkserver_pid"]))] if st.get("forkserver_pid") else []
        return [int(s["pid"]) for s in services.values()] + [int(p) for p in infra] + forks

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def login(self, email: str = ADMIN[0], password: str = ADMIN[1]) -> dict[str, str]:
        r = httpx.post(f"{self.gateway}/api/auth/login", json={"email": email, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        return {"authorization": f"Bearer {r.json()['access_token']}"}

    def status(self) -> dict[str, object]:
        out = subprocess.run(
            [HIS, "status", "--json"], env=his_env(self.data, self.port), capture_output=True, check=False, timeout=30
        )
        return dict(json.loads(out.stdout))


_DUMP_STREAMS = """
import asyncio, sys
from pathlib import Path
from his.cli.state import operator_identity
from his.kernel import bus
async def main():
    nc = await bus.connect(sys.argv[1], name="test-dump", identity=operator_identity(Path(sys.argv[2])))
    js = nc.jetstream()
    for info in await js.streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(info.config.name, seq)
            except Exception:
                continue
            print(info.config.name, msg.subject, msg.data.decode(errors="replace"), msg.headers)
    await nc.close()
asyncio.run(main())
"""


def published_events(hospital: Hospital) -> str:
    """Every message held by every JetStream stream of the hospital, one per line."""
    out = subprocess.run(
        [sys.executable, "-c", _DUMP_STREAMS, str(hospital.state()["nats_url"]), str(hospital.data)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout.decode()


def create_user(hospital: Hospital, admin: dict[str, str], role: str, tag: str) -> tuple[str, dict[str, str]]:
    """A staff account with one role, created by the administrator; returns (user id, auth headers)."""
    email = f"{role.lower()}-{tag}-{time.time_ns()}@hospital.example"
    password = "long enough staff passphrase"
    body = {"email": email, "password": password, "full_name": f"{role.title()} {tag}", "roles": [role]}
    r = httpx.post(f"{hospital.gateway}/api/admin/users", headers=admin, json=body, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["user_id"]), hospital.login(email, password)


def register_patient(hospital: Hospital, admin: dict[str, str], family: str, **extra: object) -> dict[str, object]:
    """A patient registered by the administrator; returns the details sent plus ``id`` and ``mrn``."""
    body: dict[str, object] = {
        "given_name": "Deniz",
        "family_name": family,
        "birth_date": "1969-07-21",
        "sex": "female",
        "email": f"{family.lower()}@example.org",
        "phone": "+90 555 246 8100",
        "confirm_duplicate": True,
        **extra,
    }
    r = httpx.post(f"{hospital.gateway}/api/patients", json=body, headers=admin, timeout=10)
    assert r.status_code == 201, r.text
    created: dict[str, object] = r.json()
    return body | created


def assign(hospital: Hospital, admin: dict[str, str], patient_id: object, user_id: str) -> str:
    """Put a clinician on a patient's care team; waits until patients has learnt the new account."""
    url = f"{hospital.gateway}/api/patients/{patient_id}/care-team"
    answers: list[httpx.Response] = []

    def assigned() -> bool:
        answers.append(httpx.post(url, headers=admin, json={"user_id": user_id}, timeout=10))
        assert answers[-1].status_code in (201, 422), answers[-1].text
        return answers[-1].status_code == 201

    wait_until(assigned, what="the clinician account to reach patients")
    return str(answers[-1].json()["id"])


#: An invitation code as a message shows it (Crockford base32, three groups of four).
INVITATION_CODE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b")


def mail_to(hospital: Hospital, address: str) -> dict[Path, email.message.EmailMessage]:
    """Every message in the hospital's maildir addressed to ``address``, by file."""
    box = hospital.data / "mail" / "maildir"
    found = {}
    for path in [*box.glob("new/*"), *box.glob("cur/*")]:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        if msg["To"] == address:
            found[path] = msg
    return found


#: The token of the confirmation link identity e-mails at self-registration.
CONFIRM_LINK = re.compile(r"https?://\S+/verify-email\?token=([A-Za-z0-9_-]+)")


def own_account(hospital: Hospital, address: str, password: str, full_name: str) -> str:
    """A patient's own account, made as a patient makes it: registered through the gateway, then
    its address confirmed with the link e-mailed to it (read from the hospital's maildir) and the
    password. The account's id."""
    before = set(mail_to(hospital, address))
    body = {"email": address, "password": password, "full_name": full_name}
    r = httpx.post(f"{hospital.gateway}/api/auth/register", json=body, timeout=10)
    assert r.status_code == 201, r.text
    tokens: list[str] = []

    def mailed() -> bool:
        for path, msg in mail_to(hospital, address).items():
            if path not in before and (found := CONFIRM_LINK.search(msg.get_content())):
                tokens.append(found.group(1))
        return bool(tokens)

    wait_until(mailed, what=f"the confirmation link to {address}")
    confirm = {"token": tokens[0], "password": password}
    confirmed = httpx.post(f"{hospital.gateway}/api/auth/verify-email", json=confirm, timeout=10)
    assert confirmed.status_code == 204, confirmed.text
    return str(r.json()["user_id"])


def invite(hospital: Hospital, staff: dict[str, str], patient_id: object, address: str) -> tuple[dict[str, Any], str]:
    """Reception invites the patient to the portal; returns the invitation and the code read from
    the mail that reaches ``address`` (the patient's e-mail on record)."""
    before = set(mail_to(hospital, address))
    r = httpx.post(f"{hospital.gateway}/api/patients/{patient_id}/invitations", headers=staff, json={}, timeout=10)
    assert r.status_code == 201, r.text
    arrived: list[email.message.EmailMessage] = []

    def mailed() -> bool:
        new = (m for p, m in mail_to(hospital, address).items() if p not in before)
        arrived.extend(m for m in new if "invitation" in str(m["Subject"]).lower())  # not the welcome
        return bool(arrived)

    wait_until(mailed, what=f"the invitation mail to {address}")
    body = arrived[0].get_content()
    code = INVITATION_CODE.search(body)
    assert code is not None, body
    return r.json(), code.group(0)


def link_by_invitation(
    hospital: Hospital, staff: dict[str, str], patient_id: object, address: str, account: dict[str, str]
) -> None:
    """Link a patient's own account to their record, as the portal does: an invitation mailed to
    the patient, its code redeemed from the account."""
    _, code = invite(hospital, staff, patient_id, address)
    r = httpx.post(
        f"{hospital.gateway}/api/patients/invitations/redeem", headers=account, json={"code": code}, timeout=10
    )
    assert r.status_code == 200, r.text
