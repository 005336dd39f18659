"""deploy/ validated offline: yamllint, `kubectl kustomize`, Kubernetes schemas, and our own rules.

Built-in kinds are checked against the schemas of a pinned Kubernetes release (kubernetes-validate,
strict: unknown fields are errors). Custom resources (CloudNativePG, cert-manager, Prometheus
Operator) have no schemas here, so a small schema of our own checks what they must carry. Then
the rules the cluster must keep: every process runs as non-root on a read-only root filesystem
with requests, limits and both probes; every process has a NetworkPolicy and only the gateway's
admits traffic from anywhere; gRPC APIs admit exactly the callers their allowlists name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, schema_contents
from referencing import Registry, Resource
from yamllint import linter
from yamllint.config import YamlLintConfig

from his.billing.api import grpc as billing_grpc
from his.cli.services import GATEWAY, SERVICES
from his.patients.api import grpc as patients_grpc
from his.practitioners.api import grpc as practitioners_grpc

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33"
#: kubernetes-validate's strict schemas (unknown fields are errors) for that release.
SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
OVERLAYS = ("dev", "prod")
PROCESSES = (*SERVICES, GATEWAY)
KUBECTL = shutil.which("kubectl")
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io"}
Doc = dict[str, Any]


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_manifests", ROOT / "tools" / "deploy_manifests.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def build(target: str) -> tuple[Doc, ...]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` cannot build the overlays here")
    out = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.load_all(out.stdout, Loader=LOADER) if d)


@cache
def raw_base() -> tuple[Doc, ...]:
    """deploy/base's own files, without kustomize (so the rules are checked even without kubectl)."""
    docs: list[Doc] = []
    for path in sorted((DEPLOY / "base").rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.load_all(path.read_text(), Loader=LOADER) if d]
    return tuple(docs)


def rendered(target: str) -> tuple[Doc, ...]:
    return raw_base() if target == "base" else build(f"overlays/{target}")


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def group(doc: Doc) -> str:
    api = str(doc["apiVersion"])
    return api.split("/", 1)[0] if "/" in api else ""


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


TARGETS = ("base", *OVERLAYS)


# --- the files themselves ---------------------------------------------------------------------


def test_base_is_what_the_generator_writes() -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in generator().expected().items() if p.read_text() != text]
    assert not stale, f"run `python tools/deploy_manifests.py` (stale: {stale})"


def test_yamllint_passes_over_deploy() -> None:
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint"))
    problems = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        problems += [f"{path.relative_to(ROOT)}:{p.line}: {p.message}" for p in linter.run(path.read_text(), config)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/prod", "tunnel"])
def test_kustomize_builds(target: str) -> None:
    docs = build(target)
    assert docs
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"his"}


def test_dashboards_are_grafana_json_over_his_metrics() -> None:
    metrics = set()
    for path in (DEPLOY / "base" / "monitoring" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"] and board["panels"]
        for panel in board["panels"]:
            metrics |= {t["expr"] for t in panel["targets"]}
    text = "\n".join(metrics)
    for name in ("his_outbox_oldest_age_seconds", "his_http_request_duration_seconds_bucket", "his_dlq_depth"):
        assert name in text


# --- schemas ----------------------------------------------------------------------------------


@cache
def _definitions() -> Registry:
    return Resource.from_contents(schema_contents(f"{SCHEMA_DIR}/_definitions.json", KUBERNETES_VERSION)) @ Registry()


@cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """kubernetes_validate.validate(), with its multi-megabyte definitions loaded once, not per document."""
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{SCHEMA_DIR}/{kind.lower()}-{api}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        raise SchemaNotFoundError(version=KUBERNETES_VERSION, kind=kind, api_version=api_version) from None
    registry = Resource.from_contents(schema) @ _definitions()
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("target", [*TARGETS, "tunnel"])
def test_builtin_kinds_validate_against_kubernetes(target: str) -> None:
    docs = build(target) if target == "tunnel" else rendered(target)
    checked = 0
    for doc in docs:
        if group(doc) in BUILTIN_GROUPS:
            _validator(doc["apiVersion"], doc["kind"]).validate(doc)
            checked += 1
    assert checked > 10 or target == "tunnel"


def test_the_schemas_refuse_what_kubernetes_would() -> None:
    """The validation is real: an unknown field and a wrong type are both errors."""
    dep = of_kind(raw_base(), "Deployment")["gateway"]
    bad = json.loads(json.dumps(dep))
    bad["spec"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        _validator("apps/v1", "Deployment").validate(bad)
    bad = json.loads(json.dumps(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "1"
    with pytest.raises(jsonschema.ValidationError):
        _validator("apps/v1", "Deployment").validate(bad)


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_STR = {"type": "string", "minLength": 1}
_META = _obj(["name"], name=_STR)
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "Cluster": _obj(
        ["spec"],
        spec=_obj(
            ["instances", "storage", "bootstrap"],
            instances={"type": "integer", "minimum": 1},
            storage=_obj(["size"], size=_STR),
            bootstrap=_obj(["initdb"], initdb=_obj(["database", "owner", "secret"], database=_STR, owner=_STR)),
        ),
    ),
    "Certificate": _obj(
        ["spec"],
        spec=_obj(
            ["secretName", "issuerRef"],
            secretName=_STR,
            issuerRef=_obj(["name", "kind"], name=_STR, kind={"enum": ["Issuer", "ClusterIssuer"]}),
            uris={"type": "array", "items": {"type": "string", "pattern": "^spiffe://his\\.local/"}},
        ),
    ),
    "Issuer": _obj(["spec"], spec={"type": "object", "minProperties": 1}),
    "PrometheusRule": _obj(
        ["spec"],
        spec=_obj(
            ["groups"],
            groups={
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    ["name", "rules"],
                    rules={
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["expr"],
                            "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                        },
                    },
                ),
            },
        ),
    ),
    "ServiceMonitor": _obj(
        ["spec"],
        spec=_obj(
            ["selector", "endpoints"],
            endpoints={"type": "array", "minItems": 1, "items": _obj(["port"], port=_STR)},
        ),
    ),
    "PodMonitor": _obj(["spec"], spec=_obj(["selector", "podMetricsEndpoints"])),
}


@pytest.mark.parametrize("target", OVERLAYS)
def test_custom_resources_carry_their_required_fields(target: str) -> None:
    kinds = set()
    for doc in rendered(target):
        if group(doc) in BUILTIN_GROUPS:
            continue
        assert doc["kind"] in CRD_SCHEMAS, f"no schema for {doc['apiVersion']} {doc['kind']}"
        jsonschema.validate(doc, {**CRD_SCHEMAS[doc["kind"]], "required": ["metadata", "spec"]})
        jsonschema.validate(doc["metadata"], _META)
        kinds.add(doc["kind"])
    assert {"Cluster", "Certificate", "PrometheusRule", "ServiceMonitor"} <= kinds


def test_alert_rules_watch_the_backbone_and_the_slo() -> None:
    rules = [r for d in raw_base() if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    assert "his_outbox_oldest_age_seconds) > 60" in alerts["HisOutboxStalled"]
    assert "his_dlq_depth) > 0" in alerts["HisDeadLettersWaiting"]
    assert "his_consumer_pending" in alerts["HisConsumerLagging"]
    assert "p95" in alerts["HisLatencySLO"]


# --- the cluster's rules ----------------------------------------------------------------------


def containers(workload: Doc) -> Iterator[Doc]:
    yield from workload["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_process_is_a_hardened_deployment(target: str) -> None:
    docs = rendered(target)
    deployments = of_kind(docs, "Deployment")
    accounts = of_kind(docs, "ServiceAccount")
    assert set(PROCESSES) <= set(deployments)
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts, name
        assert pod["serviceAccountName"] == name, "one ServiceAccount per process"
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in containers(dep):
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), (name, part)
            assert "readinessProbe" in c and "livenessProbe" in c, name
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["runAsNonRoot"] is True, name


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_four_services_of_a_sealed_lab_result_get_its_key(target: str) -> None:
    """Laboratory seals a result's test codes, flags and charges; billing, inventory and
    notifications open them (ADR 0032). No other pod gets ``his-lab-seal``, in env or volume."""
    holders = set()
    for name, dep in of_kind(rendered(target), "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        if "his-lab-seal" in json.dumps(pod):
            holders.add(name)
            [env] = [e for c in containers(dep) for e in c.get("env", []) if e["name"] == "HIS_LAB_SEAL_KEYS"]
            assert env["valueFrom"]["secretKeyRef"] == {"name": "his-lab-seal", "key": "keys"}, name
    assert holders == {"laboratory", "billing", "inventory", "notifications"}


@pytest.mark.parametrize("target", TARGETS)
def test_services_probe_readyz_through_their_own_identity(target: str) -> None:
    for name, dep in of_kind(rendered(target), "Deployment").items():
        if name not in SERVICES:
            continue
        (c,) = containers(dep)
        assert c["readinessProbe"]["exec"]["command"] == ["python", "-m", "his.kernel.probe", "/readyz"]
        assert c["livenessProbe"]["exec"]["command"][-1] == "/healthz"


@pytest.mark.parametrize("target", TARGETS)
def test_the_gateways_probes_and_metrics_are_on_its_operations_listener_not_its_public_port(target: str) -> None:
    docs = rendered(target)
    (c,) = containers(of_kind(docs, "Deployment")[GATEWAY])
    env = {e["name"]: e.get("value") for e in c["env"]}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["HIS_HTTP_PORT"] == str(ports["http"]) and env["HIS_OPS_PORT"] == str(ports["ops"])
    assert ports["http"] != ports["ops"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # his.kernel.probe asks HIS_OPS_PORT
        assert c[probe]["exec"]["command"][:3] == ["python", "-m", "his.kernel.probe"], probe
    (endpoint,) = of_kind(docs, "ServiceMonitor")[GATEWAY]["spec"]["endpoints"]
    service_ports = {p["name"]: p for p in of_kind(docs, "Service")[GATEWAY]["spec"]["ports"]}
    assert service_ports[endpoint["port"]]["targetPort"] == "ops"
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["cert"]["secret"]["name"] == "his-prometheus-tls"
    rules = of_kind(docs, "NetworkPolicy")[GATEWAY]["spec"]["ingress"]
    ops_rules = [r for r in rules if r["ports"][0]["port"] == ports["ops"]]
    assert ops_rules and all(not _open_to_anyone(r) for r in ops_rules)
    assert [p["podSelector"]["matchLabels"] for r in ops_rules for p in r["from"]] == [
        {"app.kubernetes.io/name": "prometheus"}
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_every_process_has_a_disruption_budget_and_a_service(target: str) -> None:
    docs = rendered(target)
    pdbs, services = of_kind(docs, "PodDisruptionBudget"), of_kind(docs, "Service")
    for name in PROCESSES:
        assert name in pdbs and name in services, name
    assert {p["name"] for p in services["patients"]["spec"]["ports"]} == {"https", "grpc"}


def _policies_for(labels: dict[str, str], docs: tuple[Doc, ...]) -> list[Doc]:
    return [
        p
        for p in of_kind(docs, "NetworkPolicy").values()
        if matches(p["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_default_deny_and_a_policy_per_workload(target: str) -> None:
    docs = rendered(target)
    deny = of_kind(docs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, w in of_kind(docs, kind).items():
            labels = w["spec"]["template"]["metadata"]["labels"]
            assert [p for p in _policies_for(labels, docs) if p["metadata"]["name"] != "default-deny"], name


def _open_to_anyone(rule: Doc) -> bool:
    peers = rule.get("from")
    return not peers or any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in peers)


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_gateway_is_open_to_ingress(target: str) -> None:
    open_ = {
        name
        for name, p in of_kind(rendered(target), "NetworkPolicy").items()
        if any(_open_to_anyone(r) for r in p["spec"].get("ingress", []))
    }
    assert open_ == {GATEWAY}


def _peer_names(rule: Doc) -> set[str]:
    """The pods of this namespace a rule admits (peers in other namespaces, e.g. Prometheus, aside)."""
    return {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in rule.get("from", [])
        if "podSelector" in p and "namespaceSelector" not in p
    }


ALLOWLISTS = {
    "billing": [billing_grpc.ALLOW],
    "patients": [patients_grpc.ALLOW],
    "practitioners": [practitioners_grpc.ALLOW, practitioners_grpc.DIRECTORY_ALLOW],
}


@pytest.mark.parametrize("service", sorted(ALLOWLISTS))
def test_grpc_is_reachable_only_from_the_allowlisted_callers(service: str) -> None:
    callers = {i.rsplit("/", 1)[1] for allow in ALLOWLISTS[service] for ids in allow.values() for i in ids}
    policy = of_kind(raw_base(), "NetworkPolicy")[service]["spec"]
    grpc_rules = [r for r in policy["ingress"] if r["ports"][0]["port"] == 9443]
    assert len(grpc_rules) == 1
    assert _peer_names(grpc_rules[0]) == callers
    http_rules = [r for r in policy["ingress"] if r["ports"][0]["port"] == 8443]
    assert {GATEWAY} <= set().union(*(_peer_names(r) for r in http_rules))


def test_only_services_with_a_grpc_api_open_a_grpc_port() -> None:
    services = of_kind(raw_base(), "Service")
    with_grpc = {n for n, s in services.items() if any(p["name"] == "grpc" for p in s["spec"]["ports"])}
    assert with_grpc == set(ALLOWLISTS)


def test_services_are_reachable_over_http_only_from_the_gateway_and_identity_from_all() -> None:
    """Besides: laboratory from patients, which asks it for results' values (ADR 0032), and
    patients may go there."""
    policies = of_kind(raw_base(), "NetworkPolicy")
    also = {"laboratory": {"patients"}}
    for svc in SERVICES:
        http = [r for r in policies[svc]["spec"]["ingress"] if r["ports"][0]["port"] == 8443]
        peers = set().union(*(_peer_names(r) for r in http))
        assert peers == ({GATEWAY, *SERVICES} - {svc} if svc == "identity" else {GATEWAY, *also.get(svc, ())}), svc
        scrapers = [p for r in http for p in r["from"] if "namespaceSelector" in p]
        assert [p["podSelector"]["matchLabels"] for p in scrapers] == [{"app.kubernetes.io/name": "prometheus"}]
    egress = [r for r in policies["patients"]["spec"]["egress"] if r["ports"][0]["port"] == 8443]
    assert set().union(*(_peer_names({"from": r["to"]}) for r in egress)) == {"identity", "laboratory"}


@pytest.mark.parametrize("target", TARGETS)
def test_autoscaling_covers_the_gateway_and_the_consumers(target: str) -> None:
    hpas = of_kind(rendered(target), "HorizontalPodAutoscaler")
    assert set(hpas) == {"gateway", "notifications", "billing", "audit"}
    for name, h in hpas.items():
        assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


# --- identities, NATS, PostgreSQL -------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_each_process_mounts_its_spiffe_certificate_where_his_tls_points(target: str) -> None:
    docs = rendered(target)
    certs = {c["spec"]["secretName"]: c["spec"] for c in of_kind(docs, "Certificate").values()}
    for name, dep in of_kind(docs, "Deployment").items():
        if name not in PROCESSES:
            continue
        pod = dep["spec"]["template"]["spec"]
        (c,) = containers(dep)
        env = {e["name"]: e.get("value") for e in c["env"]}
        tls_dir = os.path.dirname(env["HIS_TLS_CERT"])
        assert {env["HIS_TLS_KEY"], env["HIS_TLS_CA"]} == {f"{tls_dir}/tls.key", f"{tls_dir}/ca.crt"}
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == tls_dir)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        cert = certs[volume["secret"]["secretName"]]
        assert cert["uris"] == [f"spiffe://his.local/service/{name}"]
        assert name in cert["dnsNames"]


def _nats_conf(docs: tuple[Doc, ...]) -> str:
    return str(of_kind(docs, "ConfigMap")["his-nats-config"]["data"]["nats.conf"])


@pytest.mark.parametrize("target", TARGETS)
def test_nats_is_a_three_node_durable_cluster_and_streams_have_three_replicas(target: str) -> None:
    docs = rendered(target)
    assert of_kind(docs, "StatefulSet")["his-nats"]["spec"]["replicas"] == 3
    conf = _nats_conf(docs)
    for line in ("sync_interval: always", "store_dir: /data/jetstream", "verify_and_map: true", "routes: ["):
        assert line in conf
    assert conf.count("nats-route://") == 3
    settings = of_kind(docs, "ConfigMap")["his-settings"]["data"]
    assert settings["HIS_STREAM_REPLICAS"] == "3"


def test_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    """`nats-server -t` parses the generated config (with stand-in certificates) and exits."""
    from his.infra.nats import binary
    from his.kernel.pki import LocalCA, spiffe_id

    ident = LocalCA(tmp_path / "ca").ensure().issue("nats", spiffe_id("nats", kind="infra"))
    tls = tmp_path / "tls"
    tls.mkdir()
    for src, dst in ((ident.cert, "tls.crt"), (ident.key, "tls.key"), (ident.ca, "ca.crt")):
        shutil.copy(src, tls / dst)
    conf = _nats_conf(raw_base()).replace("/etc/nats/tls", str(tls)).replace("/data/jetstream", str(tmp_path / "js"))
    (tmp_path / "nats.conf").write_text(conf)
    out = subprocess.run(
        [binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "POD_NAME": "his-nats-0", "JS_STORE_KEY": "k" * 64},
    )
    assert out.returncode == 0, out.stderr


def test_jetstream_encrypts_its_files_with_a_key_from_a_secret() -> None:
    conf = _nats_conf(raw_base())
    assert "cipher: chachapoly" in conf and "key: $JS_STORE_KEY" in conf
    (nats,) = [d for d in raw_base() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "his-nats"]
    env = {e["name"]: e for e in nats["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JS_STORE_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "his-nats-store-key", "key": "key"}


def test_nats_users_are_the_ones_his_up_grants() -> None:
    from his.cli.services import durables
    from his.kernel import bus

    conf = _nats_conf(raw_base())
    for user in bus.users(durables()):
        assert json.dumps(user.identity) in conf
        for subject in user.publish or ():
            assert json.dumps(subject) in conf


@pytest.mark.parametrize(("target", "instances"), [("dev", 1), ("prod", 3)])
def test_postgresql_cluster_per_overlay(target: str, instances: int) -> None:
    cluster = of_kind(rendered(target), "Cluster")["his-pg"]["spec"]
    assert cluster["instances"] == instances
    assert cluster["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert cluster["enableSuperuserAccess"] is False
    if instances > 1:
        assert cluster["postgresql"]["synchronous"]["number"] >= 1


def test_migration_job_provisions_every_service_role() -> None:
    job = of_kind(raw_base(), "Job")["his-migrate"]
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["his", "migrate"]
    passwords = next(v for v in pod["volumes"] if v["name"] == "passwords")
    paths = {i["path"] for s in passwords["projected"]["sources"] for i in s["secret"]["items"]}
    assert paths == set(SERVICES)


def test_tunnel_reaches_only_the_gateway() -> None:
    docs = build("tunnel")
    egress = of_kind(docs, "NetworkPolicy")["cloudflared"]["spec"]["egress"]
    in_cluster = {
        n
        for r in egress
        for p in r.get("to", [])
        if "podSelector" in p and not p.get("namespaceSelector")
        for n in [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]]
    }
    assert in_cluster == {GATEWAY}
    config = yaml.safe_load((DEPLOY / "tunnel" / "config.yaml").read_text())
    services = {r["service"] for r in config["ingress"]}
    assert services == {"http://gateway.his.svc.cluster.local:8080", "http_status:404"}
    assert config["ingress"][-1] == {"service": "http_status:404"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


@pytest.mark.parametrize("target", TARGETS)
def test_one_witness_writes_the_audit_checkpoints_with_a_key_no_other_pod_holds(target: str) -> None:
    """The cluster's witness of the audit chain (ADR 0028): one pod, replaced rather than rolled
    (never two writers of one file), its checkpoints on a volume of its own, and the HMAC key
    mounted by it alone: audit, which the checkpoints vouch for, never holds it."""
    docs = rendered(target)
    witness = of_kind(docs, "Deployment")["his-audit-witness"]
    assert witness["spec"]["replicas"] == 1 and witness["spec"]["strategy"] == {"type": "Recreate"}
    (c,) = containers(witness)
    assert c["args"] == ["his", "audit", "checkpoint", "--every", "1"]
    pod = witness["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["his-audit-witness"] and "his-audit-witness" in of_kind(docs, "PersistentVolumeClaim")

    def holders(secret: str) -> set[str]:
        found = set()
        for name, dep in of_kind(docs, "Deployment").items():
            text = str(dep["spec"]["template"]["spec"].get("volumes", []))
            if f"'{secret}'" in text:
                found.add(name)
        return found

    assert holders("his-audit-checkpoint-key") == {"his-audit-witness"}
