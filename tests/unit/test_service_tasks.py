"""A service whose relay, consumer or dispatcher task ends on its own exits, to be restarted."""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI

from his.kernel.service import QuietServer, watch_tasks


async def forever() -> None:
    await asyncio.Event().wait()


async def broken() -> None:
    raise RuntimeError("the consumer's loop fell over")


def server() -> QuietServer:
    return QuietServer(uvicorn.Config(FastAPI()))


async def test_a_task_that_dies_makes_the_service_exit_and_is_named() -> None:
    srv = server()
    tasks = {"relay": asyncio.create_task(forever()), "tst_effects": asyncio.create_task(broken(), name="tst_effects")}
    stopped = watch_tasks(tasks, srv)
    await asyncio.wait([tasks["tst_effects"]])  # its done-callbacks ran in order: watch_tasks first
    assert stopped == ["tst_effects"] and srv.should_exit
    tasks["relay"].cancel()


async def test_tasks_cancelled_while_the_service_stops_are_not_failures() -> None:
    srv = server()
    tasks = {"relay": asyncio.create_task(forever(), name="relay")}
    stopped = watch_tasks(tasks, srv)
    srv.request_exit()
    tasks["relay"].cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert stopped == []
