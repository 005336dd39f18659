"""Reliability suite: the backbone's promises under real faults, on real PostgreSQL and NATS.

Each test records what it did in a ``Ledger`` (events committed, events rolled back, proof that
its fault happened), checks that nothing was lost, nothing unexpected appeared and no effect was
applied twice, and runs again against a deliberately broken variant (``broken.py``) to show the
check catches the breakage. Relays and consumers that must be SIGKILLed run as child processes
(``procs/``). ``HIS_TEST_SEED`` replays the random choices of a run (the seed is printed).
"""
