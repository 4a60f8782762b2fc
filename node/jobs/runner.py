"""Runs one job through its chain of containers.

The output of each container is the data of the next; the first failure stops
the chain and becomes the job's result. Any entrypoint (REST, chain) uses this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from node.jobs.model import ContainerResult, JobStatus, Location, RunResult
from node.jobs.ports import ServiceGateway


async def run_chain(
    gateway: ServiceGateway,
    containers: Sequence[str],
    data: Any,
    requires_proof: bool = False,
    source: Location = Location.OFFCHAIN,
    destination: Location = Location.OFFCHAIN,
) -> RunResult:
    results: list[ContainerResult] = []
    last = len(containers) - 1
    for index, container_id in enumerate(containers):
        # Only the ends of the chain face the job's real source and destination.
        step_source = source if index == 0 else Location.OFFCHAIN
        step_destination = destination if index == last else Location.OFFCHAIN
        result = await gateway.run(container_id, data, step_source, step_destination, requires_proof)
        results.append(result)
        if result.failed:
            return RunResult(JobStatus.FAILED, result, results[:-1])
        data = result.output
    return RunResult(JobStatus.SUCCESS, results[-1], results[:-1])
