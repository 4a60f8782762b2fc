"""The job endpoints: submit, batch, results and id lists, stream, status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiohttp import web

from node.api import wire
from node.api.appkeys import CONFIG, JOB_DESK
from node.api.body import read_body
from node.api.client_ip import client_ip, in_networks
from node.api.render import json_response
from node.jobs.desk import DelegatedRequest
from node.jobs.errors import Forbidden, InvalidRequest, JobError, Rejected
from node.jobs.model import JobStatus

# The id line must reach the client in a read of its own (contract trap 9):
# output may follow only this long after it. The client's first iter_any() takes
# whatever is buffered, so the gap must outlast the client being descheduled.
# Measured with 6 concurrent real clients on 2 cores (180 streams each):
# 3 ms merged 16%, 10 ms ~1%, 20-25 ms ~0.5%, 30-100 ms never. It delays only
# the first output, and only when that is ready sooner than this.
STREAM_ID_GAP_SECONDS = 0.05


async def _json_body(request: web.Request, check_text: bool = True) -> object:
    return wire.decode_json(await read_body(request), check_text=check_text)


async def submit(request: web.Request) -> web.Response:
    ip = client_ip(request)
    job = wire.parse_job(await _json_body(request))
    desk = request.app[JOB_DESK]
    if isinstance(job, DelegatedRequest):
        await desk.submit_delegated(job)
        return json_response({})
    return json_response({"id": await desk.submit(ip, job)})


async def submit_batch(request: web.Request) -> web.Response:
    ip = client_ip(request)
    # Text that cannot be stored is answered per item (wire.parse_batch), not for the batch.
    items = wire.parse_batch(await _json_body(request, check_text=False))
    jobs = [item for item in items if not isinstance(item, InvalidRequest)]
    answers = iter(await request.app[JOB_DESK].submit_batch(ip, jobs) if jobs else [])
    # An item refused while parsing is its answer already (a BatchAnswer error).
    in_order = [item if isinstance(item, InvalidRequest) else next(answers) for item in items]
    return json_response([wire.batch_answer(answer) for answer in in_order])


def _pending_filter(query: Mapping[str, str]) -> bool | None:
    # The client sends pending=true|false; the docs' curl uses status=pending|completed|all.
    pending = query.get("pending")
    if pending == "true":
        return True
    if pending == "false":
        return False
    status = query.get("status", "").lower()
    if status == "pending":
        return True
    if status == "completed":
        return False
    return None


async def get_jobs(request: web.Request) -> web.Response:
    ip = client_ip(request)
    desk = request.app[JOB_DESK]
    if "id" in request.query:
        ids = request.query.getall("id")
        intermediate = request.query.get("intermediate", "").lower() == "true"
        return json_response([wire.job_result(job, intermediate) for job in await desk.results(ip, ids)])
    return json_response(await desk.ids(ip, _pending_filter(request.query)))


async def record_status(request: web.Request) -> web.Response:
    ip = client_ip(request)
    if not in_networks(ip, request.app[CONFIG].server.status_allowed_networks):
        raise Forbidden("Unauthorized")
    body = wire.parse_status(await _json_body(request))
    if body.status not in ("success", "failed", "running"):
        raise InvalidRequest("Status is invalid", {"status": body.status})
    await request.app[JOB_DESK].record_status(ip, body.id, JobStatus(body.status), body.containers, body.data)
    return json_response({})


async def stream(request: web.Request) -> web.StreamResponse:
    ip = client_ip(request)
    job = wire.parse_job(await _json_body(request))
    if isinstance(job, DelegatedRequest):
        raise Rejected("Streaming only supported for OffchainJob requests.")
    stream_job = await request.app[JOB_DESK].open_stream(ip, job)
    try:
        await stream_job.start()
    except JobError as error:
        # Nothing is sent yet, so the failure can still be a JSON answer.
        error.params = {**(error.params or {}), "job_id": stream_job.id}
        raise
    chunks = stream_job.chunks()

    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        await response.prepare(request)
        await response.write(f"{stream_job.id}\n".encode())
        id_sent = time.monotonic()
        first = True
        async for chunk in chunks:
            if first:
                first = False
                wait = STREAM_ID_GAP_SECONDS - (time.monotonic() - id_sent)
                if wait > 0:
                    await asyncio.sleep(wait)
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; the job is recorded as failed by the relay
    finally:
        await chunks.aclose()
    return response
