"""The processes that make up a hospital, in start order."""

SERVICES = (
    "identity",
    "audit",
    "patients",
    "practitioners",
    "scheduling",
    "admissions",
    "laboratory",
    "inventory",
    "billing",
    "notifications",
)
GATEWAY = "gateway"
