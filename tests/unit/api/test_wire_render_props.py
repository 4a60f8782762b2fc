"""Rendering: whatever the domain holds, what api/wire.py renders validates against the
response model that /openapi.json documents for it.

The handlers render with plain functions (no validation on the hot path); these
properties are where the rendered shapes meet the models.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from node.api import wire
from node.jobs.desk import BatchAnswer
from node.jobs.errors import Forbidden, InvalidRequest, JobError, Overloaded, Rejected, Unavailable
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, TokenUsage
from node.services.gateway import StreamFailed
from tests.support.strategies import EXAMPLES, json_values

SETTINGS = settings(max_examples=EXAMPLES, deadline=None)

container_ids = st.text(min_size=1, max_size=12)
results = st.one_of(
    st.builds(ContainerResult, container_ids, output=json_values(max_leaves=8)),
    st.builds(ContainerResult, container_ids, error=st.text(max_size=40)),
)
jobs = st.builds(
    Job,
    id=st.text(min_size=1, max_size=40),
    client_ip=st.sampled_from(["127.0.0.1", "::1", "10.0.0.7"]),
    containers=st.lists(container_ids, min_size=1, max_size=3),
    data=json_values(max_leaves=6),
    requires_proof=st.booleans(),
    origin=st.sampled_from(JobOrigin),
    status=st.sampled_from(JobStatus),
    result=st.one_of(st.none(), results),
    intermediate=st.lists(results, max_size=3),
    model=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    usage=st.one_of(st.none(), st.builds(TokenUsage, st.integers(0, 10**6), st.integers(0, 10**6))),
)
params = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values(max_leaves=3), max_size=3))
errors = st.one_of(
    [
        st.builds(error_type, st.text(max_size=40), params)
        for error_type in (InvalidRequest, Rejected, Forbidden, Unavailable, StreamFailed)
    ]
) | st.builds(Overloaded, st.text(max_size=40), st.floats(0, 1e6), params)
batch_answers = st.one_of(st.text(min_size=1, max_size=40), st.none(), errors)


def _conforms(model: type[BaseModel] | Any, rendered: Any) -> None:
    """`rendered` validates against `model`, and validating it loses or changes nothing."""
    adapter = TypeAdapter(model)
    parsed = adapter.validate_python(rendered)
    # As JSON text: plain JSON values only, and NaN (a service's output may hold one) equals itself.
    as_json = json.dumps(rendered, sort_keys=True)
    assert json.dumps(adapter.dump_python(parsed, exclude_unset=True), sort_keys=True) == as_json


@SETTINGS
@given(jobs, st.booleans())
def test_every_rendered_job_validates_against_its_response_model(job: Job, with_intermediate: bool) -> None:
    rendered = wire.job_result(job, with_intermediate)
    _conforms(wire.JobResultBody, rendered)
    # The wire keeps the reference's three statuses: queued reads as running.
    assert rendered["status"] == ("running" if job.status is JobStatus.QUEUED else job.status.value)
    assert ("intermediate" in rendered) is with_intermediate


@SETTINGS
@given(st.lists(jobs, max_size=4), st.booleans())
def test_a_rendered_result_list_validates_against_get_jobs_answer(job_list: list[Job], with_intermediate: bool) -> None:
    _conforms(wire.JobResults, [wire.job_result(job, with_intermediate) for job in job_list])


@SETTINGS
@given(errors)
def test_every_rendered_error_validates_against_the_error_model(error: JobError) -> None:
    rendered = wire.error_body(error)
    _conforms(wire.ErrorBody, rendered)
    assert rendered["error"] == error.message and rendered.get("params") == error.params


@SETTINGS
@given(st.lists(batch_answers, max_size=5))
def test_every_rendered_batch_answer_validates_against_the_batch_model(answers: list[BatchAnswer]) -> None:
    _conforms(list[wire.BatchItemAnswer], [wire.batch_answer(answer) for answer in answers])
