"""A child for the fork server's tests, run as ``__main__``.

It prints ``GREETING`` and its parent's pid (with ``TRACE_ID=1`` also the trace id of a new
span), then exits with ``EXIT_CODE``; with ``SLEEP=1`` it prints "sleeping" and waits until a
signal ends it (SIGTERM's default action).
"""

from __future__ import annotations

import os
import signal
import sys

print(f"greeting={os.environ.get('GREETING', '')} ppid={os.getppid()} vars={len(os.environ)}", flush=True)
if os.environ.get("TRACE_ID") == "1":
    from his.kernel import tracing

    with tracing.span("probe") as span:
        print(f"trace_id={span.get_span_context().trace_id:032x}", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if os.environ.get("SLEEP") == "1":
    print("sleeping", flush=True)
    while True:
        signal.pause()
raise SystemExit(int(os.environ.get("EXIT_CODE", "0")))
