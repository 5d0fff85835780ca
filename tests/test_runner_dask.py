"""``runner=trioflow.DaskRunner(...)`` (issue 14 item 3), against a real LocalCluster.

Slow (a cluster of two worker processes is started once for the module): these
tests carry the ``distributed`` mark, which ``nox -s tests`` leaves out and
``nox -s distributed`` runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _process_steps as steps
import anyio
import pytest

import trioflow
from trioflow import DaskRunner, Flow, FlowError, Retry, StepStatus

pytestmark = [pytest.mark.anyio, pytest.mark.distributed]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        yield client


async def test_200_cpu_bound_items_over_2_workers_equal_local_execution(client: Any) -> None:
    runner = DaskRunner(client)
    remote = Flow("remote")
    remote.add(steps.burn, runner=runner, map_over="xs")
    local = Flow("local")

    @local.step(map_over="xs")
    async def burn(xs: int) -> int:
        return steps.burn(xs)

    items = list(range(200))
    on_dask = await remote.run({"xs": items})
    assert on_dask["burn"] == (await local.run({"xs": items}))["burn"]
    spread = Flow("spread")
    spread.add(steps.whoami, runner=runner, map_over="xs")
    seen = (await spread.run({"xs": list(range(10))}))["whoami"]
    assert len({pid for *_, pid in seen}) == 2  # the items spread over both workers


async def test_context_usage_exceptions_and_retries_come_back(client: Any) -> None:
    runner = DaskRunner(client)
    flow = Flow("d")
    flow.add(steps.whoami, runner=runner, map_over="xs")
    flow.add(steps.square, runner=runner, map_over="xs")
    flow.add(steps.flaky, runner=runner, retry=Retry(max_attempts=2))
    flow.add(steps.raises_key_error, runner=runner)
    with pytest.raises(FlowError) as info:
        await flow.run({"xs": [1, 2, 3], "marker": "m"}, run_id="dask-1", error_handling="continue")
    result = info.value.result
    assert [s[:4] for s in result["whoami"]] == [("whoami", i, 1, "dask-1") for i in range(3)]
    assert result["square"] == [1, 4, 9]
    assert result.steps["square"].usage == {"calls": 3, "units": 6}
    assert result["flaky"] == "m on attempt 2"
    assert result.steps["flaky"].usage == {"tries": 2}
    (error,) = info.value.exceptions
    assert type(error) is KeyError
    assert error.args == ("missing key",)
    assert error.__notes__[0].startswith("trioflow: raised by step 'raises_key_error' in a Dask worker")


async def test_what_dask_serializes_crosses_lambdas_included(client: Any) -> None:
    flow = Flow("d")
    offset = 10
    flow.add(lambda x: x + offset, name="add", runner=DaskRunner(client))
    flow.add(steps.returns_unpicklable, runner=DaskRunner(client))
    with pytest.raises(FlowError) as info:
        await flow.run({"x": 1}, error_handling="continue")
    assert info.value.result["add"] == 11
    (error,) = info.value.exceptions
    assert type(error) is TypeError
    assert str(error) == (
        "step 'returns_unpicklable': result (a Unpicklable) cannot be sent back from the worker: "
        "TypeError: Unpicklable objects refuse to be pickled"
    )


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_fail_fast_cancels_pending_tasks_and_returns_without_waiting(
    client: Any, tmp_path: Path
) -> None:
    flow = Flow("d")
    log = tmp_path / "started"
    flow.add(steps.spin_logged, runner=DaskRunner(client), map_over="xs")

    @flow.step
    async def fails() -> None:
        # fail once both workers are busy spinning
        while _count_lines(log) < 2:
            await anyio.to_thread.run_sync(time.sleep, 0.01)
        raise ValueError("sibling failed")

    with pytest.raises(FlowError) as info:
        await flow.run({"xs": list(range(10)), "seconds": 5.0, "log": str(log)})
    assert info.value.result.steps["spin_logged"].status is StepStatus.CANCELLED
    # the run returned while the two running tasks still spin on their workers
    assert _count_lines(tmp_path / "started.done") == 0
    # once they are done, the 8 cancelled tasks never start
    deadline = time.monotonic() + 60
    while _count_lines(tmp_path / "started.done") < 2 and time.monotonic() < deadline:
        await anyio.to_thread.run_sync(time.sleep, 0.05)
    await anyio.to_thread.run_sync(time.sleep, 1.0)
    assert _count_lines(log) == 2


async def test_max_concurrent_counts_the_tasks_submitted(client: Any, tmp_path: Path) -> None:
    flow = Flow("d")
    log = tmp_path / "times"
    flow.add(steps.timed_item, runner=DaskRunner(client), map_over="xs")
    result = await flow.run({"xs": list(range(4)), "log": str(log)}, max_concurrent=1)
    assert result["timed_item"] == [0, 1, 2, 3]
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 4
    # one task at a time on the cluster, though it has two idle workers
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(3))


async def test_a_runner_from_an_address_owns_its_client(cluster: Any) -> None:
    flow = Flow("d")
    async with DaskRunner(cluster.scheduler_address) as runner:
        flow.add(steps.square, runner=runner, map_over="xs")
        assert (await flow.run({"xs": [2, 3]}))["square"] == [4, 9]
        client = runner.client
        assert client.status == "running"
    assert client.status == "closed"
    assert runner.client is None
    with pytest.raises(FlowError) as info:
        await flow.run({"xs": [1]})
    (error,) = info.value.exceptions
    assert isinstance(error, RuntimeError)
    assert "is closed; make a new DaskRunner" in str(error)


@pytest.mark.parametrize("given", ["address", "cluster"])
async def test_a_runner_connects_on_first_use_and_closes(cluster: Any, given: str) -> None:
    runner = DaskRunner(cluster.scheduler_address if given == "address" else cluster)
    assert runner.client is None
    flow = Flow("d")
    flow.add(steps.square, runner=runner)
    assert (await flow.run({"xs": 5}))["square"] == 25
    client = runner.client
    await runner.aclose()
    assert client.status == "closed"


async def test_a_runner_from_a_client_leaves_it_to_its_owner(client: Any) -> None:
    runner = DaskRunner(client)
    flow = Flow("d")
    flow.add(steps.square, runner=runner)
    assert (await flow.run({"xs": 4}))["square"] == 16
    await runner.aclose()
    assert client.status == "running"


def test_an_asynchronous_client_on_asyncio(cluster: Any) -> None:
    import asyncio

    from distributed import Client

    async def main() -> list[int]:
        async with Client(cluster.scheduler_address, asynchronous=True) as client:
            flow = Flow("d")
            flow.add(steps.square, runner=DaskRunner(client), map_over="xs")
            result = await flow.run({"xs": [1, 2, 3]})
            assert result.steps["square"].usage == {"calls": 3, "units": 6}
            value: list[int] = result["square"]
            return value

    assert asyncio.run(main()) == [1, 4, 9]


def test_bad_arguments() -> None:
    with pytest.raises(
        TypeError,
        match=r"^DaskRunner takes a scheduler address such as 'tcp://127.0.0.1:8786' or a "
        r"distributed.Client \(got 8786 that is a int\)$",
    ):
        DaskRunner(8786)

    async def coro() -> None:
        pass

    flow = Flow("d")
    with pytest.raises(TypeError, match=r"^step 'coro': runner=DaskRunner\(...\) runs plain functions"):
        flow.add(coro, runner=DaskRunner("tcp://127.0.0.1:1"))
    assert repr(trioflow.DaskRunner("tcp://127.0.0.1:1")) == "<trioflow.DaskRunner tcp://127.0.0.1:1>"
