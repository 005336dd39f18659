"""A fork server: one process imports a program's modules once, then forks its children.

Why: a program made of many Python processes that import the same heavy modules (web
framework, validation, messaging and database clients) pays for those imports once per
process. Started as separate interpreters on a machine with few cores, that repeated import
work is most of the start. A process that has already imported them forks a child in
milliseconds, and the children share the imported modules' memory copy-on-write
(docs/adr/0013-fork-server.md has the measurements).

How: ``ForkServer.start(preload)`` starts ``python -c …`` with one end of a Unix
``SOCK_SEQPACKET`` socket pair. The server imports ``preload``, runs ``gc.collect()`` and
``gc.freeze()`` (so the children's collections do not touch, and copy, the shared objects),
and waits. Each packet is one JSON message (``encode`` / ``decode``). A spawn request carries
the child's output fd (``SCM_RIGHTS``): the caller creates the pipe and reads it as it would a
subprocess's. The forked child starts its own session, reads /dev/null, writes to that fd, gets
exactly the environment it was given, default signal handlers, and runs its module as
``__main__``, as ``python -m module`` would.

Rules the server keeps:
- It starts no thread and no event loop before forking: forking a process with threads is
  unsafe (locks held by other threads stay held), and gRPC warns when forked after it started.
  Importing is fine; what the preloaded modules do at import time must stay passive.
- Only it can wait for its children: it reports each exit status (``Exited``), and it signals
  only children it has not reaped yet, so a pid that was reused is never signalled.
- When its caller goes away (end of file on the socket) or on SIGTERM, it stops its children
  (SIGTERM, then SIGKILL after a grace period) and exits.

What the preloaded modules create at import is the same in every child: a random generator
made at import must reseed after a fork (``os.register_at_fork``), or the children repeat each
other's "random" numbers.

A forked child's ``/proc/<pid>/environ`` and ``cmdline`` are the server's (what the kernel
recorded at exec); the child's ``os.environ`` is what the caller sent. Its ``comm`` is its name.

Modules: ``protocol`` (the messages, pure), ``server`` (the fork server process), ``client``
(the caller's ``ForkServer`` and its ``ForkedProcess`` handles).
"""

from his.infra.forkserver.client import UNKNOWN_EXIT, ForkedProcess, ForkServer, ForkServerError

__all__ = ["UNKNOWN_EXIT", "ForkServer", "ForkServerError", "ForkedProcess"]
