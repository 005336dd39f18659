"""The plan of a hospital: which children ``his up`` runs, their ports, and the environment each
gets (its own settings, read and checked here, and nothing else of the supervisor's)."""

from __future__ import annotations

import json
import os
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from his.cli.services import CONSOLE, GATEWAY, SERVICES, settings_class
from his.cli.settings import OperatorSettings
from his.cli.supervisor.datadir import secret
from his.cli.supervisor.stack import Child, Stack
from his.events.laboratory import SEAL_SETTING, SEALED_FOR
from his.infra import nats as nats_infra
from his.infra.procs import ServerStartError
from his.kernel import migrations
from his.kernel.config import ProcessSettings
from his.kernel.crypto import new_key_text


def check_gateway_port(settings: OperatorSettings) -> None:
    if not nats_infra.port_free(settings.host, settings.gateway_port):
        raise ServerStartError(
            f"gateway port {settings.host}:{settings.gateway_port} is already in use (set HIS_GATEWAY_PORT)"
        )


def plan_children(stack: Stack) -> None:
    s = stack.settings
    check_gateway_port(s)
    nats_infra.taken(s.gateway_port)  # free now, but the gateway binds it after the services' picks
    base = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    base.update(
        {
            "HIS_DATA_DIR": str(s.data_path),
            "HIS_LOG_LEVEL": s.log_level,
            "HIS_HOST": s.host,
            "PYTHONUNBUFFERED": "1",
            "HIS_ALLOW_UNSAFE_DURABILITY": "1" if s.allow_unsafe_durability else "0",
            "HIS_TIMEZONE": hospital_timezone(s),
            "HIS_DB_TIMEOUT": str(s.db_timeout),
            "HIS_INBOX_RETENTION_DAYS": str(s.inbox_retention_days),
        }
    )
    if s.fault_points:  # test-only (his.kernel.faults); each service arms its own points
        base["HIS_FAULT_POINTS"] = s.fault_points
    if s.otlp_endpoint:  # OTEL_* variables pass through as they are
        base["HIS_OTLP_ENDPOINT"] = s.otlp_endpoint
    # Internal listeners speak mutual TLS only: the scheme says so, the certificates enforce it.
    upstreams = {svc: f"https://{s.host}:{nats_infra.free_port(s.host)}" for svc in SERVICES}
    grpc_ports = {svc: nats_infra.free_port(s.host) for svc in SERVICES}
    base["HIS_IDENTITY_URL"] = upstreams["identity"]
    base["HIS_LABORATORY_URL"] = upstreams["laboratory"]  # patients asks it for results' values (ADR 0032)
    base.update({f"HIS_{svc.upper()}_GRPC": f"{s.host}:{port}" for svc, port in grpc_ports.items()})
    for svc in SERVICES:  # the gateway goes last: it only watches the others
        url = upstreams[svc]
        port = int(url.rsplit(":", 1)[1])
        env = dict(
            base,
            **stack.identities[svc].env(),
            HIS_SERVICE=svc,
            HIS_SERVICE_DATABASE_URL=migrations.with_credentials(
                stack.admin_dsn, migrations.runtime_role(svc), secret(s.data_path, f"db-{svc}")
            ),
            HIS_SERVICE_NATS_URL=stack.nats_url,
            HIS_HTTP_PORT=str(port),
            HIS_GRPC_PORT=str(grpc_ports[svc]),
        )
        if svc == "identity":
            env["HIS_IDENTITY_KEY_PASSPHRASE"] = secret(s.data_path, "identity-key-passphrase")
        env.update(service_settings_env(svc))
        if svc == "identity":  # its reset links point at the console, where users reach the hospital
            env["HIS_PUBLIC_URL"] = s.public_url or f"http://{s.host}:{s.gateway_port}"
        if svc == "patients" and "HIS_RECORDS_KEYS" not in env:  # generated once, kept under the data dir
            env["HIS_RECORDS_KEYS"] = secret(s.data_path, "records-key", make=new_key_text)
        if svc in SEALED_FOR:  # a lab result's sealed content: these four only (ADR 0032)
            env[SEAL_SETTING] = os.environ.get(SEAL_SETTING) or secret(s.data_path, "lab-seal-key", make=new_key_text)
        if svc == "billing":  # the embedded TEST payment provider signs its confirmations with this
            env.setdefault("HIS_PAYMENT_WEBHOOK_SECRET", secret(s.data_path, "payment-webhook-secret"))
            env.setdefault("HIS_PAYMENT_WEBHOOK_URL", f"http://{s.host}:{s.gateway_port}/api/payments/webhooks/test")
        stack.children.append(Child(svc, f"his.{svc}", env, url, user=stack.accounts.get(svc)))
    # The console: its pages are forwarded by the gateway to its listener; it calls the API on
    # the gateway's console listener, which admits its certificate only (docs/adr/0027).
    console_url = f"https://{s.host}:{nats_infra.free_port(s.host)}"
    console_port = nats_infra.free_port(s.host)
    env = dict(
        base,
        **stack.identities[CONSOLE].env(),
        HIS_SERVICE=CONSOLE,
        HIS_SERVICE_DATABASE_URL=migrations.with_credentials(
            stack.admin_dsn, migrations.runtime_role(CONSOLE), secret(s.data_path, f"db-{CONSOLE}")
        ),
        HIS_HTTP_PORT=console_url.rsplit(":", 1)[1],
        HIS_CONSOLE_API_URL=f"https://{s.host}:{console_port}",
        HIS_SERVICE_NATS_URL=stack.nats_url,  # it hears that appointments changed (his.kernel.bus)
        HIS_PUBLIC_URL=s.public_url or f"http://{s.host}:{s.gateway_port}",
        HIS_CONSOLE_KEYS=secret(s.data_path, "console-key", make=new_key_text),
    )
    stack.children.append(Child(CONSOLE, "his.console", env, console_url, user=stack.accounts.get(CONSOLE)))
    # The gateway's health, readiness and metrics are on its own mutual-TLS listener, not on the
    # public port: that is the address `his status` and the health checks use.
    ops_port = nats_infra.free_port(s.host)
    env = {
        **base,
        **service_settings_env(GATEWAY),  # its limits (HIS_GATEWAY_*)
        **stack.identities[GATEWAY].env(),
        "HIS_SERVICE": GATEWAY,
        "HIS_HTTP_PORT": str(s.gateway_port),
        "HIS_OPS_PORT": str(ops_port),
        "HIS_CONSOLE_PORT": str(console_port),
        "HIS_UPSTREAMS": json.dumps({**upstreams, CONSOLE: console_url}),
    }
    stack.children.append(
        Child(GATEWAY, "his.gateway", env, f"https://{s.host}:{ops_port}", user=stack.accounts.get(GATEWAY))
    )


S = TypeVar("S", bound=BaseSettings)


def service_settings(cls: type[S], service: str) -> S:
    """A service's own settings, read and checked here: one clear error at start, not a crash loop."""
    try:
        return cls()
    except ValidationError as exc:
        names = ", ".join(f"HIS_{str(e['loc'][0]).upper()}" for e in exc.errors())
        raise ServerStartError(f"invalid {service} settings: {names} (see README, Settings)") from None


def hospital_timezone(settings: OperatorSettings) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ServerStartError(
            f"HIS_TIMEZONE={settings.timezone!r} is not a time zone (e.g. Europe/Istanbul)"
        ) from None
    return settings.timezone


def service_settings_env(service: str) -> dict[str, str]:
    """The checked settings of a service, handed to its process (nothing else of the supervisor's
    environment is): those its own settings class declares (``his.cli.services.SETTINGS``), not
    the ones every process shares (``ProcessSettings``), which the plan sets."""
    cls = settings_class(service)
    if cls is None:
        return {}
    values = service_settings(cls, service).model_dump(exclude=set(ProcessSettings.model_fields))
    return {f"HIS_{k.upper()}": str(v) for k, v in values.items() if v is not None}
