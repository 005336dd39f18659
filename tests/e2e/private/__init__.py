"""The end-to-end tests that stop, kill or reconfigure their hospital: one private hospital for
them all (conftest.py), apart from the shared one of tests/e2e/conftest.py."""

#: The gateway's HIS_GATEWAY_HEADER_TIMEOUT and HIS_GATEWAY_BODY_TIMEOUT in the private hospital
#: (10 s and 30 s by default): shortened so that the edge-abuse tests watch slow clients cut off.
READ_DEADLINE = 2.0
#: A file beside the private hospital's data directory whose presence arms billing's fault point
#: after a desk payment's commit (see ``his.kernel.faults``): the point fires once, consuming it,
#: and the service is SIGKILLed.
KILL_AFTER_PAYMENT = "kill-billing-after-payment-commit"
