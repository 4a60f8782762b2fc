from node.jobs.model import JobStatus, Location
from node.jobs.runner import run_chain
from tests.unit.fakes import ScriptedGateway


async def test_output_of_each_container_is_data_of_the_next() -> None:
    gateway = ScriptedGateway({"inc": lambda v: v + 1, "double": lambda v: v * 2})
    outcome = await run_chain(gateway, ["inc", "double", "inc"], 1)
    assert outcome.status is JobStatus.SUCCESS
    assert outcome.result.container == "inc" and outcome.result.output == 5
    assert [step.output for step in outcome.intermediate] == [2, 4]
    assert [call[1] for call in gateway.calls] == [1, 2, 4]


async def test_first_failure_stops_the_chain() -> None:
    gateway = ScriptedGateway({"boom": lambda v: RuntimeError("exploded")})
    outcome = await run_chain(gateway, ["ok", "boom", "never"], {"x": 1})
    assert outcome.status is JobStatus.FAILED
    assert outcome.result.to_dict() == {"container": "boom", "error": "exploded"}
    assert [step.container for step in outcome.intermediate] == ["ok"]
    assert [call[0] for call in gateway.calls] == ["ok", "boom"]


async def test_only_the_ends_face_the_job_source_and_destination() -> None:
    gateway = ScriptedGateway()
    await run_chain(gateway, ["a", "b", "c"], 0, True, Location.ONCHAIN, Location.ONCHAIN)
    assert [(c[2], c[3]) for c in gateway.calls] == [
        (Location.ONCHAIN, Location.OFFCHAIN),
        (Location.OFFCHAIN, Location.OFFCHAIN),
        (Location.OFFCHAIN, Location.ONCHAIN),
    ]
    assert all(call[4] is True for call in gateway.calls)
