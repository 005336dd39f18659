"""A typed client generated from the public OpenAPI document works against the running hospital.

The document is fetched from the gateway of the shared hospital, a Python client is generated
from it with openapi-python-client (in an environment of its own: its pins conflict with the
runtime's), and the client signs in, registers a patient, reads the patient back as a typed
model, reads the lab catalogue with its nested models, and gets a typed problem for an id that
does not exist. The generator must not warn: a warning means an operation or a schema it could
not generate (two services' schemas of one name, an enum of one name and other values, a
response it could not resolve).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ADMIN, Hospital

GENERATOR = "openapi-python-client==0.29.1"
UV = Path(sys.executable).parent / "uv"


@pytest.fixture(scope="module")
def generated(shared_hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The generated package's directory on ``sys.path`` and its name; the generator's output."""
    root = tmp_path_factory.mktemp("client")
    spec, config = root / "openapi.json", root / "config.json"
    spec.write_text(json.dumps(httpx.get(f"{shared_hospital.gateway}/openapi.json", timeout=30).json()))
    config.write_text(json.dumps({"post_hooks": []}))  # no formatter run over the output
    out = root / "his_client"
    command: list[str | Path] = [
        UV,
        "tool",
        "run",
        "--from",
        GENERATOR,
        "openapi-python-client",
        "generate",
        "--meta",
        "none",
    ]
    run = subprocess.run(
        [*command, "--path", str(spec), "--output-path", str(out), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    sys.path.insert(0, str(root))
    try:
        yield "his_client", output
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "his_client" or m.startswith("his_client.")]:
            del sys.modules[name]


def module(package: str, name: str) -> ModuleType:
    return importlib.import_module(f"{package}.{name}")


def test_the_generator_warns_of_nothing(generated: tuple[str, str]) -> None:
    _, output = generated
    assert "Warning" not in output and "Unable to parse" not in output, output


def test_the_generated_client_signs_in_registers_and_reads_a_patient(
    shared_hospital: Hospital, generated: tuple[str, str]
) -> None:
    pkg, _ = generated
    client, models = module(pkg, "client"), module(pkg, "models")
    login = module(pkg, "api.identity.identity_post_auth_login")
    register = module(pkg, "api.patients.patients_post_patients")
    read = module(pkg, "api.patients.patients_get_patients_patient_id")
    catalogue = module(pkg, "api.laboratory.laboratory_get_lab_catalog")

    anonymous = client.Client(base_url=shared_hospital.gateway, raise_on_unexpected_status=True)
    tokens = login.sync(client=anonymous, body=models.Login(email=ADMIN[0], password=ADMIN[1]))
    assert isinstance(tokens, models.TokenPair) and tokens.token_type == "Bearer"

    api: Any = client.AuthenticatedClient(
        base_url=shared_hospital.gateway, token=tokens.access_token, raise_on_unexpected_status=True
    )
    family = f"Generated{uuid.uuid4().hex[:8]}"
    body = models.RegisterPatient(
        given_name="Ada", family_name=family, birth_date=date(1990, 5, 17), sex=models.Sex("female")
    )
    made = register.sync(client=api, body=body)
    assert isinstance(made, models.Registered), made

    patient = read.sync(id=made.id, client=api)
    assert isinstance(patient, models.Patient), patient
    assert (patient.id, patient.family_name, patient.birth_date) == (made.id, family, date(1990, 5, 17))
    assert patient.mrn == made.mrn and patient.coverage is None

    tests = catalogue.sync(client=api)
    assert isinstance(tests, models.Catalogue) and tests.items
    assert all(isinstance(t, models.CatalogueTest) and t.price for t in tests.items)

    missing = read.sync(id=uuid.uuid4(), client=api)
    assert isinstance(missing, models.Problem) and missing.status == 404, missing
