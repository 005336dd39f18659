"""The ``his`` command line: up, status, dlq, bench, events."""
