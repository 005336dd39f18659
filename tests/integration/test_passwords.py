"""argon2id hashing (real, CPU-bound: it runs in threads)."""

from __future__ import annotations

from argon2 import PasswordHasher, extract_parameters
from argon2.low_level import Type

from his.identity.passwords import Passwords


async def test_hashes_are_argon2id_at_or_above_the_owasp_minimum() -> None:
    pw = Passwords()
    stored = await pw.hash("correct horse battery staple")
    params = extract_parameters(stored)
    assert params.type is Type.ID
    assert params.memory_cost >= 19 * 1024 and params.time_cost >= 2 and params.parallelism >= 1
    assert await pw.verify(stored, "correct horse battery staple") == (True, None)
    assert await pw.verify(stored, "wrong horse battery staple") == (False, None)
    assert await pw.verify(None, "anything at all") == (False, None)


async def test_weaker_hashes_are_upgraded_at_login() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("correct horse battery staple")
    ok, upgraded = await Passwords().verify(weak, "correct horse battery staple")
    assert ok and upgraded is not None
    assert extract_parameters(upgraded).memory_cost >= 19 * 1024
