"""The one place where a gRPC answer becomes a result (``RpcClient.ask``), no IO: the codes named
"absent" are None, any other refusal is ``DependencyRefusedError`` (a 503, logged), and no
answer is ``DependencyUnavailableError``. Every client in ``his.clients`` asks through it."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from his.kernel.resilience import DependencyRefusedError, DependencyUnavailableError, RetryPolicy
from his.kernel.rpc import RpcClient


class Method:
    _method = b"/unit.V1/Ask"

    def __init__(self, outcome: grpc.StatusCode | None) -> None:
        self.outcome = outcome

    async def __call__(self, request: bytes, timeout: float | None = None, **_: Any) -> bytes:
        if self.outcome is not None:
            raise grpc.aio.AioRpcError(self.outcome, grpc.aio.Metadata(), grpc.aio.Metadata(), "said no")
        return request


def method(outcome: grpc.StatusCode | None) -> Any:
    """A stand-in for a grpc.aio multicallable (typed as one would be)."""
    return Method(outcome)


def client() -> RpcClient:
    return RpcClient("unit_directory", channel=None, retry=RetryPolicy(max_attempts=1))  # type: ignore[arg-type]


async def test_an_answer_is_returned() -> None:
    assert await client().ask(method(None), b"x") == b"x"


async def test_not_found_is_none_and_so_is_any_code_named_absent() -> None:
    assert await client().ask(method(grpc.StatusCode.NOT_FOUND), b"x") is None
    gone = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
    got = await client().ask(method(grpc.StatusCode.FAILED_PRECONDITION), b"x", absent=gone)
    assert got is None


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
    ],
)
async def test_any_other_refusal_is_a_refused_dependency_and_is_logged(
    code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="his.rpc"), pytest.raises(DependencyRefusedError) as refused:
        await client().ask(method(code), b"x")
    assert isinstance(refused.value, DependencyUnavailableError)  # answered 503, retried by consumers
    assert refused.value.dependency == "unit_directory" and refused.value.code == code.name
    assert code.name in str(refused.value) and "said no" in str(refused.value)
    assert f"unit_directory refused /unit.V1/Ask: it refused the call ({code.name}" in caplog.text


async def test_no_answer_is_an_unavailable_dependency_not_a_refusal() -> None:
    with pytest.raises(DependencyUnavailableError) as down:
        await client().ask(method(grpc.StatusCode.UNAVAILABLE), b"x")
    assert not isinstance(down.value, DependencyRefusedError)
