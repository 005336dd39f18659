"""`his status --json` under a real `his up`: every process up, with request figures from its
/metrics, outbox and consumer figures, and the DLQ depth."""

from __future__ import annotations

import json
import subprocess
import threading

import httpx

from tests.e2e.harness import HIS, Hospital, his_env, register_patient


def test_status_shows_every_service_up_with_figures_under_traffic(shared_hospital: Hospital) -> None:
    h = shared_hospital
    admin = h.login()
    register_patient(h, admin, "Statusfigure")
    stop = threading.Event()

    def traffic() -> None:  # requests while `his status` measures its window
        with httpx.Client(base_url=h.gateway, headers=admin, timeout=10) as c:
            while not stop.is_set():
                assert c.get("/api/practitioners").status_code == 200

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        out = subprocess.run(
            [HIS, "status", "--json", "--interval", "1.5"],
            env=his_env(h.data, h.port),
            capture_output=True,
            check=False,
            timeout=60,
        )
    finally:
        stop.set()
        worker.join(15)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["healthy"] and snap["nats"] == "connected" and isinstance(snap["dlq_depth"], int)
    services = {s["name"]: s for s in snap["services"]}
    assert {"gateway", "identity", "patients", "practitioners", "scheduling", "billing"} <= set(services)
    for name, s in services.items():
        assert s["health"] == "ready", name
        assert s["http"]["requests_total"] >= 0 and s["http"]["window_seconds"] > 1, name
        if name not in ("gateway", "console"):  # neither has an outbox
            assert isinstance(s["outbox"]["backlog"], int), name
            assert all(isinstance(c["pending"], int) for c in s["consumers"]), name
    for busy in ("gateway", "practitioners"):
        assert services[busy]["http"]["requests_per_second"] > 0, busy
        assert services[busy]["http"]["p95_ms"] > 0, busy
    assert services["patients"]["http"]["requests_total"] >= 1  # the registration
    # Scrape-time figures each service's /metrics read from JetStream and its outbox.
    assert {"his_dlq_depth", "his_consumer_pending", "his_outbox_backlog"} <= set(services["billing"]["metrics"])
