"""A health probe for a mutual-TLS listener: ``python -m his.kernel.probe /readyz``.

The kubelet's own HTTPS probes present no client certificate, and a service's listener requires
one, so a cluster runs this inside the container instead (an exec probe). It presents the
process's own workload identity (``HIS_TLS_*``) to ``127.0.0.1:HIS_HTTP_PORT`` (the gateway's
operations listener, ``HIS_OPS_PORT``, where that is set) and exits 0 on HTTP 200, 1 otherwise.
Standard library only, so it starts quickly and stays small.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from collections.abc import Mapping


def context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    """A client context with the workload's certificate, or None when it has no identity."""
    cert, key, ca = (env.get(f"HIS_TLS_{part}") for part in ("CERT", "KEY", "CA"))
    if not (cert and key and ca):
        return None
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False  # the peer is this very container, reached by address
    return ctx


def probe(path: str, env: Mapping[str, str], timeout: float = 3.0) -> int:
    """The HTTP status of ``path`` on this process's own listener (0 when unreachable)."""
    port = int(env.get("HIS_OPS_PORT") or env.get("HIS_HTTP_PORT") or 0)
    ctx = context(env)
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
        if ctx is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    )
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    status = probe(path, os.environ)
    if status != 200:
        print(f"{path}: {status or 'unreachable'}", file=sys.stderr)
    return 0 if status == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
