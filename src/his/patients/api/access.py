"""What the patients routes share: the use cases, and how a refusal is documented.

The access check itself is the use cases' (``his.patients.chart.Chart.open``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from his.kernel.web import errors, provided
from his.patients.chart import Chart

#: The patients service's use cases, as a route's dependency.
Patients = Annotated[Chart, Depends(provided(Chart))]

#: The 403 a clinician gets without a care relationship (documented in the OpenAPI responses).
CARE_REQUIRED_RESPONSE: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "not allowed; for a clinician without a care relationship, the body offers emergency access",
        "content": {
            "application/problem+json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "emergency_access": {
                            "type": "object",
                            "properties": {
                                "href": {"type": "string"},
                                "method": {"type": "string"},
                                "requires": {"type": "object"},
                                "minutes": {"type": "number"},
                                "notice": {"type": "string"},
                            },
                        },
                    },
                }
            }
        },
    }
}

#: A route that reaches one patient: 404 for an unknown id (or another patient's), 403 as above.
ONE_PATIENT: dict[int | str, dict[str, Any]] = {**errors(404), **CARE_REQUIRED_RESPONSE}
