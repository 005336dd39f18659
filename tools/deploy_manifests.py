"""Write deploy/base/ from the code's own facts: services, gRPC allowlists, NATS permissions.

The per-service manifests repeat one pattern eleven times and the NATS authorization block must
match ``his.kernel.bus.users()`` exactly, so they are generated rather than hand-copied:
``python tools/deploy_manifests.py`` rewrites them; ``--check`` fails when the committed files
differ (the manifest tests run it). The overlays, the tunnel recipe, the dashboards and the
README are written by hand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from his.cli.services import GATEWAY, SERVICES, durables
from his.events.laboratory import SEAL_SETTING
from his.kernel import bus
from his.kernel.bus import NatsUser
from his.kernel.pki import spiffe_id

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "base"
NAMESPACE = "his"
IMAGE = "his"
NATS_IMAGE = "nats:2.11.9-alpine"
NATS_EXPORTER_IMAGE = "natsio/prometheus-nats-exporter:0.17.3"
PG_IMAGE = "ghcr.io/cloudnative-pg/postgresql:17.6"
HTTP_PORT, GRPC_PORT, GATEWAY_PORT = 8443, 9443, 8080
NATS_CLIENT, NATS_ROUTE, NATS_MONITOR, NATS_METRICS = 4222, 6222, 8222, 7777
PG_PORT = 5432
TLS_DIR = "/var/run/secrets/his/tls"
NATS_SERVICE, NATS_HEADLESS, NATS_NODES = "his-nats", "his-nats-headless", 3
PG_CLUSTER = "his-pg"
PART_OF = {"app.kubernetes.io/part-of": "his"}
#: Where Prometheus runs (kube-prometheus-stack's defaults); change in an overlay if yours differs.
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
#: Consumer-heavy services scale on CPU next to the gateway.
AUTOSCALED = ("gateway", "notifications", "billing", "audit")
#: Requests and limits: the services aim at < 120 MB RSS (docs/performance.md); identity hashes
#: passwords with argon2id (64 MiB each, bounded concurrency), the gateway carries every request.
RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "default": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    "identity": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
    "gateway": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "256Mi"}},
}
#: The key of a lab result's sealed content (ADR 0032): laboratory seals, billing, inventory and
#: notifications open (``his.events.laboratory.SEALED_FOR``); no other pod gets it.
LAB_SEAL = (SEAL_SETTING, "his-lab-seal", "keys", False)
#: Secrets each process reads beyond its database password (created outside git: README).
EXTRA_SECRETS: dict[str, list[tuple[str, str, str, bool]]] = {
    "identity": [
        ("HIS_IDENTITY_KEY_PASSPHRASE", "his-identity", "passphrase", False),
        # identity e-mails password reset links itself (they never travel on the bus)
        ("HIS_SMTP_HOST", "his-notifications-smtp", "host", True),
        ("HIS_SMTP_USER", "his-notifications-smtp", "user", True),
        ("HIS_SMTP_PASSWORD", "his-notifications-smtp", "password", True),
    ],
    "patients": [("HIS_RECORDS_KEYS", "his-patients-records", "keys", False)],
    "laboratory": [LAB_SEAL],
    "billing": [LAB_SEAL],
    "inventory": [LAB_SEAL],
    "notifications": [
        LAB_SEAL,
        ("HIS_SMTP_HOST", "his-notifications-smtp", "host", True),
        ("HIS_SMTP_USER", "his-notifications-smtp", "user", True),
        ("HIS_SMTP_PASSWORD", "his-notifications-smtp", "password", True),
    ],
}


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component, **PART_OF}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def meta(name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": labels(name, component), **extra}


def pods(*names: str) -> list[dict[str, Any]]:
    """NetworkPolicy peers: the pods of these processes (same namespace)."""
    return [{"podSelector": {"matchLabels": selector(n)}} for n in names]


def allowlists(service: str) -> list[dict[str, frozenset[str]]]:
    """Every per-method allowlist (module-level ``*ALLOW`` maps) of a service's gRPC API."""
    try:
        module = importlib.import_module(f"his.{service}.api.grpc")
    except ModuleNotFoundError:
        return []
    return [v for k, v in vars(module).items() if k.endswith("ALLOW") and isinstance(v, dict)]


def grpc_callers() -> dict[str, list[str]]:
    """Who may call each gRPC API: the union of its per-method allowlists (SPIFFE ids → names)."""
    prefix = spiffe_id("")
    out: dict[str, list[str]] = {}
    for svc in SERVICES:
        ids = {i for allow in allowlists(svc) for callers in allow.values() for i in callers}
        if ids:
            out[svc] = sorted(i.removeprefix(prefix) for i in ids)
    return out


def http_callers() -> dict[str, list[str]]:
    """Which services call another's HTTP listener on a path it lists for them by name
    (``ServiceDefinition.callers``: patients asks laboratory for results, audit asks identity
    for staff names); the gateway, which calls every listener, is not among them."""
    prefix = spiffe_id("")
    out: dict[str, list[str]] = {}
    for svc in SERVICES:
        callers = importlib.import_module(f"his.{svc}.app").build().callers
        ids = {i for allowed in callers.paths.values() for i in allowed if i.startswith(prefix)}
        names = sorted({i.removeprefix(prefix) for i in ids} & set(SERVICES) - {svc})
        if names:
            out[svc] = names
    return out


def dns_names(name: str) -> list[str]:
    return [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.cluster.local"]


def certificate(
    name: str, uri: str, secret: str, dns: list[str] | None = None, usages: tuple[str, ...] = ()
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "secretName": secret,
        "duration": "720h",
        "renewBefore": "240h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "uris": [uri],
        "usages": list(usages or ("digital signature", "key encipherment", "server auth", "client auth")),
        "issuerRef": {"name": "his-ca", "kind": "Issuer", "group": "cert-manager.io"},
    }
    if dns:
        spec["dnsNames"] = dns
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta(name, "identity"),
        "spec": spec,
    }


def pg_url(role: str, password_var: str) -> str:
    return (
        f"postgresql://{role}:$({password_var})@{PG_CLUSTER}-rw:{PG_PORT}/his"
        f"?sslmode=verify-full&sslrootcert={TLS_DIR}/ca.crt"
    )


def security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def probes(name: str) -> dict[str, Any]:
    """Services listen with mutual TLS only, and the kubelet presents no client certificate, so
    their probes are exec probes presenting the pod's own identity (his.kernel.probe). The
    gateway's are the same, on its operations listener: a flood of its public port (or every
    connection it allows taken) must not make it look dead and get it restarted."""

    def check(path: str) -> dict[str, Any]:
        return {"exec": {"command": ["python", "-m", "his.kernel.probe", path]}}

    # The gateway's /readyz asks every service behind it; one service down must not take the
    # whole edge out of rotation, so the gateway's readiness is its own liveness.
    ready = "/healthz" if name == GATEWAY else "/readyz"
    return {
        "startupProbe": {**check("/healthz"), "periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 30},
        "readinessProbe": {**check(ready), "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**check("/healthz"), "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
    }


def env_for(name: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HIS_SERVICE", "value": name},
        {"name": "HIS_HTTP_PORT", "value": str(GATEWAY_PORT if name == GATEWAY else HTTP_PORT)},
        {"name": "HIS_TLS_CERT", "value": f"{TLS_DIR}/tls.crt"},
        {"name": "HIS_TLS_KEY", "value": f"{TLS_DIR}/tls.key"},
        {"name": "HIS_TLS_CA", "value": f"{TLS_DIR}/ca.crt"},
    ]
    if name == GATEWAY:
        upstreams = {svc: f"https://{svc}:{HTTP_PORT}" for svc in SERVICES}
        return [
            *env,
            # Health, readiness and metrics: mutual TLS, on the port the services use for theirs.
            {"name": "HIS_OPS_PORT", "value": str(HTTP_PORT)},
            # Clients reach it through a proxy (ingress, tunnel), all from the proxy's few
            # addresses: the cap per address is the cap in all (README, Known gaps).
            {"name": "HIS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "value": "1000"},
            {"name": "HIS_UPSTREAMS", "value": json.dumps(upstreams, indent=2) + "\n"},
        ]
    if name in grpc_callers():
        env.append({"name": "HIS_GRPC_PORT", "value": str(GRPC_PORT)})
    env += [
        secret_env("HIS_DB_PASSWORD", f"his-db-{name}", "password"),
        {"name": "HIS_SERVICE_DATABASE_URL", "value": pg_url(f"his_{name}", "HIS_DB_PASSWORD")},
        {"name": "HIS_SERVICE_NATS_URL", "value": f"tls://{NATS_SERVICE}:{NATS_CLIENT}"},
    ]
    env += [secret_env(var, sec, key, optional) for var, sec, key, optional in EXTRA_SECRETS.get(name, [])]
    return env


def secret_env(var: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}


def deployment(name: str) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": GATEWAY_PORT if name == GATEWAY else HTTP_PORT}]
    if name == GATEWAY:
        ports.append({"name": "ops", "containerPort": HTTP_PORT})
    if name in grpc_callers():
        ports.append({"name": "grpc", "containerPort": GRPC_PORT})
    container = {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["python", "-m", f"his.{name}"],
        "envFrom": [{"configMapRef": {"name": "his-settings"}}],
        "env": env_for(name),
        "ports": ports,
        "resources": RESOURCES.get(name, RESOURCES["default"]),
        **probes(name),
        # Let endpoints drop this pod before it stops listening, so no request lands on a closed port.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "data", "mountPath": "/var/lib/his"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir: the root filesystem is read-only
        ],
    }
    pod = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": 30,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(name)},
            }
        ],
        "containers": [container],
        "volumes": [
            {"name": "tls", "secret": {"secretName": f"his-{name}-tls", "defaultMode": 0o440}},
            {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(
            name,
            "gateway" if name == GATEWAY else "service",
            # Workload certificates are read at start: roll the pods when cert-manager renews them
            # (stakater/Reloader honours this annotation; without it, renewBefore leaves 10 days).
            annotations={"secret.reloader.stakater.com/reload": f"his-{name}-tls"},
        ),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(name, "gateway" if name == GATEWAY else "service")},
                "spec": pod,
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    if name == GATEWAY:
        ports = [
            {"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "appProtocol": "http"},
            {"name": "https", "port": HTTP_PORT, "targetPort": "ops", "appProtocol": "https"},
        ]
    else:
        ports = [{"name": "https", "port": HTTP_PORT, "targetPort": "http", "appProtocol": "https"}]
    if name in grpc_callers():
        ports.append({"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, "gateway" if name == GATEWAY else "service"),
        "spec": {"type": "ClusterIP", "selector": selector(name), "ports": ports},
    }


def network_policy(name: str) -> dict[str, Any]:
    """Who may reach this process, and where it may go (on top of the namespace's default deny)."""
    port = GATEWAY_PORT if name == GATEWAY else HTTP_PORT
    ingress: list[dict[str, Any]]
    if name == GATEWAY:
        # The edge: the only listener open to clients from anywhere (ingress controller, tunnel,
        # load balancer). Tighten `from` in an overlay when only the tunnel may reach it.
        ingress = [{"ports": [{"port": port, "protocol": "TCP"}]}]
    else:
        callers = [GATEWAY] + (list(SERVICES) if name == "identity" else [])  # everyone reads identity's JWKS
        callers += http_callers().get(name, [])  # services admitted on a path of its own
        ingress = [{"from": pods(*sorted(set(callers) - {name})), "ports": [{"port": port, "protocol": "TCP"}]}]
        ingress.append({"from": [PROMETHEUS], "ports": [{"port": port, "protocol": "TCP"}]})
    if name == GATEWAY:  # its metrics are on its operations listener, for Prometheus alone
        ingress.append({"from": [PROMETHEUS], "ports": [{"port": HTTP_PORT, "protocol": "TCP"}]})
    callers = grpc_callers().get(name)
    if callers:
        ingress.append({"from": pods(*callers), "ports": [{"port": GRPC_PORT, "protocol": "TCP"}]})
    egress = [dns_egress()]
    if name == GATEWAY:
        egress.append({"to": pods(*SERVICES), "ports": [{"port": HTTP_PORT, "protocol": "TCP"}]})
    else:
        egress += [
            {"to": pods(NATS_SERVICE), "ports": [{"port": NATS_CLIENT, "protocol": "TCP"}]},
            {
                "to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": PG_CLUSTER}}}],
                "ports": [{"port": PG_PORT, "protocol": "TCP"}],
            },
        ]
        if name != "identity":
            asked = sorted({"identity"} | {svc for svc, who in http_callers().items() if name in who})
            egress.append({"to": pods(*asked), "ports": [{"port": HTTP_PORT, "protocol": "TCP"}]})
        called = sorted(svc for svc, who in grpc_callers().items() if name in who)
        if called:
            egress.append({"to": pods(*called), "ports": [{"port": GRPC_PORT, "protocol": "TCP"}]})
        if name == "notifications":  # outbound mail to the hospital's SMTP relay
            egress.append(
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                    "ports": [{"port": p, "protocol": "TCP"} for p in (25, 465, 587)],
                }
            )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def dns_egress() -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }


def pdb(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, "disruption-budget"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


def service_monitor(name: str) -> dict[str, Any]:
    # /metrics sits behind mutual TLS (the gateway's on its operations listener, never on its
    # public port): Prometheus presents its own workload certificate.
    endpoint: dict[str, Any] = {"port": "https", "path": "/metrics", "interval": "15s", "scheme": "https"}
    endpoint["tlsConfig"] = {
        "serverName": name,
        "ca": {"secret": {"name": "his-prometheus-tls", "key": "ca.crt"}},
        "cert": {"secret": {"name": "his-prometheus-tls", "key": "tls.crt"}},
        "keySecret": {"name": "his-prometheus-tls", "key": "tls.key"},
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(name, "monitoring"),
        "spec": {"selector": {"matchLabels": selector(name)}, "endpoints": [endpoint]},
    }


def service_account(name: str, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(name, component),
        "automountServiceAccountToken": False,
    }


def process_manifests(name: str) -> list[dict[str, Any]]:
    component = "gateway" if name == GATEWAY else "service"
    cert = certificate(name, spiffe_id(name), f"his-{name}-tls", dns=[*dns_names(name), "localhost"])
    return [
        service_account(name, component),
        cert,
        deployment(name),
        service(name),
        pdb(name),
        network_policy(name),
        service_monitor(name),
    ]


def hpa(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name, "autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


# --- NATS ------------------------------------------------------------------------------------


def nats_users_block(users: tuple[NatsUser, ...]) -> str:
    """The same users and permissions as ``his.infra.nats`` writes for `his up`, one per line."""

    def allow(subjects: tuple[str, ...]) -> str:
        inner = ",\n".join(f"          {json.dumps(s)}" for s in subjects)
        return f"{{allow: [\n{inner}\n        ]}}"

    def entry(user: NatsUser) -> str:
        perms = [
            f"        {verb}: {allow(allowed)}"
            for verb, allowed in (("publish", user.publish), ("subscribe", user.subscribe))
            if allowed is not None
        ]
        body = f"      user: {json.dumps(user.identity)}"
        if perms:
            body += ",\n      permissions: {\n" + ",\n".join(perms) + "\n      }"
        return "    {\n" + body + "\n    }"

    return ",\n".join(entry(u) for u in users)


def nats_conf() -> str:
    routes = ",\n".join(
        f"    nats-route://{NATS_SERVICE}-{i}.{NATS_HEADLESS}.{NAMESPACE}.svc.cluster.local:{NATS_ROUTE}"
        for i in range(NATS_NODES)
    )
    tls = "/etc/nats/tls"
    return f"""# Generated by tools/deploy_manifests.py from his.kernel.bus.users(): do not edit by hand.
server_name: $POD_NAME
listen: 0.0.0.0:{NATS_CLIENT}
https: 0.0.0.0:{NATS_MONITOR}
max_payload: 1MB
lame_duck_duration: 30s
jetstream {{
  store_dir: /data/jetstream
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 20GB
  # The streams hold clinical events for their retention: their files are encrypted.
  cipher: chachapoly
  key: $JS_STORE_KEY
}}
tls {{
  cert_file: {tls}/tls.crt
  key_file: {tls}/tls.key
  ca_file: {tls}/ca.crt
  verify_and_map: true
  timeout: 2
}}
cluster {{
  name: his
  listen: 0.0.0.0:{NATS_ROUTE}
  routes: [
{routes}
  ]
  tls {{
    cert_file: {tls}/tls.crt
    key_file: {tls}/tls.key
    ca_file: {tls}/ca.crt
    verify: true
    timeout: 2
  }}
}}
authorization {{
  users = [
{nats_users_block(bus.users(durables()))}
  ]
}}
"""


def nats_manifests() -> list[dict[str, Any]]:
    name = NATS_SERVICE
    sel = selector(name)
    ports = [
        {"name": "client", "port": NATS_CLIENT, "targetPort": "client"},
        {"name": "cluster", "port": NATS_ROUTE, "targetPort": "cluster"},
        {"name": "monitor", "port": NATS_MONITOR, "targetPort": "monitor"},
        {"name": "metrics", "port": NATS_METRICS, "targetPort": "metrics"},
    ]
    tls_dir = "/etc/nats/tls"
    server = {
        "name": "nats",
        "image": NATS_IMAGE,
        "args": ["--config", "/etc/nats/config/nats.conf"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            secret_env("JS_STORE_KEY", "his-nats-store-key", "key"),
        ],
        "ports": [
            {"name": "client", "containerPort": NATS_CLIENT},
            {"name": "cluster", "containerPort": NATS_ROUTE},
            {"name": "monitor", "containerPort": NATS_MONITOR},
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "startupProbe": {
            "httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor", "scheme": "HTTPS"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz?js-server-only=true", "port": "monitor", "scheme": "HTTPS"},
            "periodSeconds": 10,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor", "scheme": "HTTPS"},
            "periodSeconds": 30,
            "failureThreshold": 3,
        },
        # Lame duck mode moves clients off this node before it stops.
        "lifecycle": {"preStop": {"exec": {"command": ["nats-server", "-sl=ldm=/var/run/nats/nats.pid"]}}},
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/nats/config", "readOnly": True},
            {"name": "tls", "mountPath": tls_dir, "readOnly": True},
            {"name": "data", "mountPath": "/data"},
            {"name": "run", "mountPath": "/var/run/nats"},
        ],
    }
    server["args"] += ["--pid", "/var/run/nats/nats.pid"]
    exporter = {
        "name": "metrics",
        "image": NATS_EXPORTER_IMAGE,
        "args": [
            "-port",
            str(NATS_METRICS),
            "-connz",
            "-routez",
            "-healthz",
            "-varz",
            "-jsz=all",
            f"https://localhost:{NATS_MONITOR}",
        ],
        # The monitoring port is https with the his CA; Go programs take extra roots from here.
        "env": [{"name": "SSL_CERT_FILE", "value": f"{tls_dir}/ca.crt"}],
        "ports": [{"name": "metrics", "containerPort": NATS_METRICS}],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "securityContext": security_context(),
        "volumeMounts": [{"name": "tls", "mountPath": tls_dir, "readOnly": True}],
    }
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(name, "nats"),
        "spec": {
            "serviceName": NATS_HEADLESS,
            "replicas": NATS_NODES,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": {"labels": labels(name, "nats")},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 60,
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": sel}}
                            ]
                        }
                    },
                    "containers": [server, exporter],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "his-nats-config"}},
                        {"name": "tls", "secret": {"secretName": "his-nats-tls", "defaultMode": 0o440}},
                        {"name": "run", "emptyDir": {}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
                }
            ],
        },
    }
    peers = pods(*SERVICES)
    peers.append({"podSelector": {"matchLabels": selector("his-migrate")}})
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": sel},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": peers, "ports": [{"port": NATS_CLIENT, "protocol": "TCP"}]},
                {"from": pods(name), "ports": [{"port": NATS_ROUTE, "protocol": "TCP"}]},
                {"from": [PROMETHEUS], "ports": [{"port": NATS_METRICS, "protocol": "TCP"}]},
            ],
            "egress": [dns_egress(), {"to": pods(name), "ports": [{"port": NATS_ROUTE, "protocol": "TCP"}]}],
        },
    }
    nats_dns = [*dns_names(name), f"*.{NATS_HEADLESS}.{NAMESPACE}.svc.cluster.local", "localhost"]
    return [
        service_account(name, "nats"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("his-nats-config", "nats"),
            "data": {"nats.conf": nats_conf()},
        },
        certificate(name, spiffe_id("nats", kind="infra"), "his-nats-tls", dns=nats_dns),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name, "nats"),
            "spec": {"selector": sel, "ports": [p for p in ports if p["name"] == "client"]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(NATS_HEADLESS, "nats"),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": sel, "ports": ports},
        },
        sts,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(name, "disruption-budget"),
            # R3 streams keep quorum with one node down, not two.
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel}},
        },
        policy,
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": meta(name, "monitoring"),
            "spec": {
                "selector": {"matchLabels": sel},
                "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
        },
    ]


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_manifests() -> list[dict[str, Any]]:
    sel = {"cnpg.io/cluster": PG_CLUSTER}
    cluster = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": meta(PG_CLUSTER, "postgresql"),
        "spec": {
            "instances": 1,
            "imageName": PG_IMAGE,
            "primaryUpdateStrategy": "unsupervised",
            "enableSuperuserAccess": False,
            "postgresql": {
                "parameters": {
                    "synchronous_commit": "on",
                    "max_connections": "400",
                    "shared_buffers": "512MB",
                    "pg_stat_statements.max": "10000",
                },
                # One schema and login per service: `his migrate` creates them with the admin role.
                "pg_hba": ["hostssl his all all scram-sha-256"],
            },
            "bootstrap": {
                "initdb": {
                    "database": "his",
                    "owner": "his_admin",
                    "secret": {"name": "his-pg-admin"},
                }
            },
            # The migration role creates each service's roles; it is no superuser.
            "managed": {
                "roles": [
                    {
                        "name": "his_admin",
                        "ensure": "present",
                        "login": True,
                        "createrole": True,
                        "passwordSecret": {"name": "his-pg-admin"},
                    }
                ]
            },
            # The server certificate comes from the same CA as every workload identity, so
            # services verify it (sslmode=verify-full) with the CA bundle they already hold.
            "certificates": {"serverTLSSecret": "his-pg-server-tls", "serverCASecret": "his-pg-server-tls"},
            "storage": {"size": "20Gi"},
            "walStorage": {"size": "10Gi"},
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            "affinity": {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname"},
            "monitoring": {"enablePodMonitor": True},
        },
    }
    pg_dns = [
        *(n for svc in ("rw", "ro", "r") for n in dns_names(f"{PG_CLUSTER}-{svc}")),
    ]
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(PG_CLUSTER, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": sel},
            "policyTypes": ["Ingress", "Egress"],
            # CloudNativePG's instance manager talks to the Kubernetes API and ships WAL and
            # backups to object storage (both HTTPS); instances replicate from each other.
            "egress": [
                dns_egress(),
                {
                    "to": [{"podSelector": {"matchLabels": sel}}],
                    "ports": [{"port": PG_PORT, "protocol": "TCP"}, {"port": 8000, "protocol": "TCP"}],
                },
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                    "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                },
            ],
            "ingress": [
                {
                    "from": [
                        *pods(*SERVICES),
                        {"podSelector": {"matchLabels": selector("his-migrate")}},
                        {"podSelector": {"matchLabels": selector(WITNESS)}},
                    ],
                    "ports": [{"port": PG_PORT, "protocol": "TCP"}],
                },
                # Replication between instances, and the CloudNativePG operator's status checks.
                {
                    "from": [{"podSelector": {"matchLabels": sel}}],
                    "ports": [{"port": PG_PORT, "protocol": "TCP"}, {"port": 8000, "protocol": "TCP"}],
                },
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}}],
                    "ports": [{"port": 8000, "protocol": "TCP"}, {"port": PG_PORT, "protocol": "TCP"}],
                },
                {"from": [PROMETHEUS], "ports": [{"port": 9187, "protocol": "TCP"}]},
            ],
        },
    }
    return [
        cluster,
        certificate(f"{PG_CLUSTER}-server", spiffe_id("postgresql", kind="infra"), "his-pg-server-tls", dns=pg_dns),
        policy,
    ]


# --- the rest of the base ---------------------------------------------------------------------


def pki_manifests() -> list[dict[str, Any]]:
    """A namespaced CA: a self-signed root bootstraps it (replace with your PKI's issuer in prod)."""
    return [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": meta("his-selfsigned", "identity"),
            "spec": {"selfSigned": {}},
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": meta("his-ca", "identity"),
            "spec": {
                "isCA": True,
                "commonName": "his workload CA",
                "secretName": "his-ca",
                "duration": "87600h",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {"name": "his-selfsigned", "kind": "Issuer", "group": "cert-manager.io"},
            },
        },
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": meta("his-ca", "identity"),
            "spec": {"ca": {"secretName": "his-ca"}},
        },
        certificate("his-operator", bus.OPERATOR, "his-operator-tls", usages=("digital signature", "client auth")),
        certificate(
            "his-prometheus",
            spiffe_id("prometheus", kind="infra"),
            "his-prometheus-tls",
            usages=("digital signature", "client auth"),
        ),
    ]


def settings_configmap() -> dict[str, Any]:
    data = {
        "HIS_HOST": "0.0.0.0",  # noqa: S104 - inside a pod; NetworkPolicies decide who reaches it
        "HIS_DATA_DIR": "/var/lib/his",
        "HIS_LOG_LEVEL": "INFO",
        "HIS_TIMEZONE": "UTC",
        "HIS_ALLOW_UNSAFE_DURABILITY": "0",
        "HIS_STREAM_REPLICAS": str(NATS_NODES),
        "HIS_IDENTITY_URL": f"https://identity:{HTTP_PORT}",
        **{f"HIS_{svc.upper()}_URL": f"https://{svc}:{HTTP_PORT}" for svc in sorted(http_callers())},
        **{f"HIS_{svc.upper()}_GRPC": f"{svc}:{GRPC_PORT}" for svc in sorted(grpc_callers())},
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the image's root filesystem is read-only
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("his-settings", "settings"), "data": data}


def migrate_manifests() -> list[dict[str, Any]]:
    name = "his-migrate"
    passwords = {
        "projected": {
            "sources": [
                {"secret": {"name": f"his-db-{svc}", "items": [{"key": "password", "path": svc}]}} for svc in SERVICES
            ],
            "defaultMode": 0o440,
        }
    }
    container = {
        "name": "migrate",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["his", "migrate", "--passwords-dir", "/var/run/secrets/his/db"],
        "envFrom": [{"configMapRef": {"name": "his-settings"}}],
        "env": [
            secret_env("HIS_ADMIN_DB_PASSWORD", "his-pg-admin", "password"),
            {"name": "HIS_DATABASE_URL", "value": pg_url("his_admin", "HIS_ADMIN_DB_PASSWORD")},
            {"name": "HIS_NATS_URL", "value": f"tls://{NATS_SERVICE}:{NATS_CLIENT}"},
            {"name": "HIS_TLS_CERT", "value": f"{TLS_DIR}/tls.crt"},
            {"name": "HIS_TLS_KEY", "value": f"{TLS_DIR}/tls.key"},
            {"name": "HIS_TLS_CA", "value": f"{TLS_DIR}/ca.crt"},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "passwords", "mountPath": "/var/run/secrets/his/db", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(
            name,
            "migration",
            annotations={
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        ),
        "spec": {
            "backoffLimit": 10,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels(name, "migration")},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "OnFailure",
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [
                        {"name": "tls", "secret": {"secretName": "his-operator-tls", "defaultMode": 0o440}},
                        {"name": "passwords", **passwords},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                dns_egress(),
                {"to": pods(NATS_SERVICE), "ports": [{"port": NATS_CLIENT, "protocol": "TCP"}]},
                {
                    "to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": PG_CLUSTER}}}],
                    "ports": [{"port": PG_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }
    return [service_account(name, "migration"), job, policy]


WITNESS = "his-audit-witness"
#: Where the witness keeps its data directory: the checkpoint file on its volume, the key and
#: audit's database password from Secrets.
WITNESS_DATA = "/var/lib/his"


def witness_manifests() -> list[dict[str, Any]]:
    """The audit chain's witness (ADR 0028): ``his audit checkpoint --every 1``, as `his up` does
    for its own hospital. One pod (a second would write the same file from elsewhere), its
    checkpoint file on a volume of its own, the HMAC key from a Secret only it mounts, audit's
    database role to read the chain's head and keep the count."""
    name = WITNESS
    heartbeat = [
        "python",
        "-c",
        f"import os, sys, time; sys.exit(time.time() - os.path.getmtime('{WITNESS_DATA}/audit/witness.alive') > 30)",
    ]
    container = {
        "name": "witness",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["his", "audit", "checkpoint", "--every", "1"],
        "env": [
            {"name": "HIS_DATA_DIR", "value": WITNESS_DATA},
            # The place only: the credentials are audit's runtime role's, from its Secret.
            {
                "name": "HIS_DATABASE_URL",
                "value": f"postgresql://{PG_CLUSTER}-rw:{PG_PORT}/his?sslmode=verify-full&sslrootcert={TLS_DIR}/ca.crt",
            },
        ],
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "128Mi"}},
        "securityContext": security_context(),
        # Alive while it turns: the heartbeat it touches every turn is younger than 30 s.
        "readinessProbe": {"exec": {"command": heartbeat}, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": heartbeat}, "periodSeconds": 20, "failureThreshold": 3},
        "volumeMounts": [
            {"name": "checkpoints", "mountPath": f"{WITNESS_DATA}/audit"},
            {"name": "secrets", "mountPath": f"{WITNESS_DATA}/secrets", "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        ],
    }
    secrets = {
        "projected": {
            "sources": [
                {
                    "secret": {
                        "name": "his-audit-checkpoint-key",
                        "items": [{"key": "key", "path": "audit-checkpoint-key"}],
                    }
                },
                {"secret": {"name": "his-db-audit", "items": [{"key": "password", "path": "db-audit"}]}},
            ],
            "defaultMode": 0o440,  # the pod's group (fsGroup), as every mounted Secret
        }
    }
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, "audit-witness"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # never two writers of one file
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": labels(name, "audit-witness")},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [
                        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": name}},
                        {"name": "secrets", **secrets},
                        {"name": "tls", "secret": {"secretName": "his-operator-tls", "defaultMode": 0o440}},
                    ],
                },
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(name, "audit-witness"),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                dns_egress(),
                {
                    "to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": PG_CLUSTER}}}],
                    "ports": [{"port": PG_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }
    return [service_account(name, "audit-witness"), claim, deploy, policy]


def namespace_manifests() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    **PART_OF,
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("default-deny", "network-policy"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        settings_configmap(),
    ]


def files() -> dict[str, list[dict[str, Any]]]:
    """Every generated file of deploy/base, relative to it, with its documents."""
    out = {
        "namespace.yaml": namespace_manifests(),
        "pki.yaml": pki_manifests(),
        "nats.yaml": nats_manifests(),
        "postgres.yaml": postgres_manifests(),
        "migrate.yaml": migrate_manifests(),
        "audit-witness.yaml": witness_manifests(),
        "autoscaling.yaml": [hpa(n) for n in AUTOSCALED],
    }
    for name in (*SERVICES, GATEWAY):
        out[f"processes/{name}.yaml"] = process_manifests(name)
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(docs: list[dict[str, Any]]) -> str:
    header = "# Generated by tools/deploy_manifests.py: edit that script, not this file.\n"
    return header + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=200)


def kustomization(names: list[str]) -> str:
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [*names, "monitoring"],
    }
    return render([doc])


def expected() -> dict[Path, str]:
    generated = files()
    out = {BASE / rel: render(docs) for rel, docs in generated.items()}
    out[BASE / "kustomization.yaml"] = kustomization(list(generated))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="Fail when deploy/base differs from what this writes.")
    args = parser.parse_args()
    stale = [p for p, text in expected().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python tools/deploy_manifests.py)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in expected().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"wrote {len(expected())} files under {BASE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
