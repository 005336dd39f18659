"""What the patients routes share: the use cases, and how a refusal is documented.

The access check itself is the use cases' (``his.patients.chart.Chart.open``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from his.kernel.problems import Problem
from his.kernel.web import Responses, errors, provided
from his.patients.chart import Chart

#: Every route of the service, on one router (``care``, ``records``, ``lab`` and ``invitations``
#: add theirs to it when ``http`` imports them, before its ``/{patient_id}``, which would match
#: their fixed paths). One flat router, not routers included in a router: FastAPI walks every
#: included router's routes twice for each request, a cost paid by every read of a patient.
router = APIRouter(prefix="/patients", tags=["patients"])

#: The patients service's use cases, as a route's dependency.
Patients = Annotated[Chart, Depends(provided(Chart))]


class EmergencyAccessOffer(BaseModel):
    """How to request emergency (break-the-glass) access to the patient."""

    href: str
    method: str
    #: What the request needs (a reason, and how long it must be).
    requires: dict[str, str]
    notice: str
    #: How long a grant lasts.
    minutes: float | None = None


class CareRequired(Problem):
    """A 403: staff are refused; a clinician without a care relationship is also told how to
    request emergency access (``emergency_access``)."""

    emergency_access: EmergencyAccessOffer | None = None


#: The 403 a clinician gets without a care relationship (documented in the OpenAPI responses).
CARE_REQUIRED_RESPONSE: Responses = {
    403: {
        "model": CareRequired,
        "description": "not allowed; for a clinician without a care relationship, the body offers emergency access",
    }
}

#: A route that reaches one patient: 404 for an unknown id (or another patient's), 403 as above.
ONE_PATIENT: Responses = {**errors(404), **CARE_REQUIRED_RESPONSE}
