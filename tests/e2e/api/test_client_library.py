"""The real `infernet_client.node.NodeClient` 1.4.0 against our node.

Each test runs one snippet in the client's own interpreter (its venv pins web3 6), which calls
the library and prints a JSON result (tests/support/client.py: run_library).
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.client import TEST_COORDINATOR, TEST_PRIVATE_KEY, FakeRpc, is_uuid, run_library

pytestmark = [pytest.mark.client]

STREAM_REPEATS = 20


def test_node_information_calls(node_url: str) -> None:
    result = run_library(
        """
        async def main():
            return {
                "health": await client.health(),
                "info": await client.get_info(),
                "resources": await client.get_resources(),
                "supported": await client.check_model_support("hello-world"),
                "unsupported": await client.check_model_support("no-such-model"),
            }
        """,
        node_url,
    )
    assert result["health"] is True
    info = result["info"]
    assert info["chain"] == {"enabled": False, "address": ""}
    assert set(info["pending"]) == {"offchain", "onchain"}
    assert {"echo", "inner", "proofy", "restricted"} <= {c["id"] for c in info["containers"]}
    assert result["resources"]["echo"]["service_id"] == "hello-world"
    assert "dead" not in result["resources"]
    assert result["supported"]["echo"] == {"supported": True}
    assert result["unsupported"]["echo"]["supported"] is False


def test_request_job_and_get_result_sync(node_url: str) -> None:
    result = run_library(
        """
        async def main():
            data = {"x": 1, "big": 2**200, "text": "żółw"}
            job_id = await client.request_job({"containers": ["echo"], "data": data, "requires_proof": False})
            # The Python API may omit requires_proof, or send None (monorepo e2e helpers).
            omitted = await client.request_job({"containers": ["echo"], "data": [1, 2]})
            null = await client.request_job({"containers": ["echo"], "data": "s", "requires_proof": None})
            return {
                "id": job_id,
                "sync": await client.get_job_result_sync(job_id),
                "omitted": await client.get_job_result_sync(omitted),
                "null": await client.get_job_result_sync(null),
                "unknown": await client.get_job_result_sync("00000000-0000-4000-8000-000000000000"),
            }
        """,
        node_url,
    )
    assert is_uuid(result["id"])
    assert result["sync"] == {
        "id": result["id"],
        "status": "success",
        "result": {"container": "echo", "output": {"x": 1, "big": 2**200, "text": "żółw"}},
    }
    assert result["omitted"]["result"] == {"container": "echo", "output": [1, 2]}
    assert result["null"]["result"] == {"container": "echo", "output": "s"}
    assert result["unknown"] is None


def test_request_job_rejections_raise_api_error(node_url: str) -> None:
    result = run_library(
        """
        async def main():
            return {
                "bad": await capture(client.request_job({"containers": ["bad"], "data": {}})),
                "proof": await capture(
                    client.request_job({"containers": ["echo"], "data": {}, "requires_proof": True})
                ),
                "inner": await capture(client.request_job({"containers": ["inner"], "data": {}})),
                "none": await capture(client.request_job({"containers": [], "data": {}})),
                "malformed": await capture(client.request_job({"containers": ["echo"]})),
            }
        """,
        node_url,
    )
    assert result["bad"]["error"] == {
        "type": "APIError",
        "message": "[405] Container not supported - [container=bad]",
        "status_code": 405,
        "api_message": "Container not supported",
        "params": {"container": "bad"},
    }
    assert result["proof"]["error"]["message"] == "[405] Container does not generate proof - [container=echo]"
    assert result["inner"]["error"]["message"] == "[405] First container must be external - [first_container=inner]"
    assert result["none"]["error"]["api_message"] == "No containers specified"
    assert result["none"]["error"]["status_code"] == 405
    # A body without `data` is a JSON client error, not a crash in the client (style B).
    malformed = result["malformed"]["error"]
    assert malformed["type"] == "APIError" and 400 <= malformed["status_code"] < 600
    assert "data" in malformed["api_message"]


def test_request_jobs_batch(node_url: str) -> None:
    result = run_library(
        """
        async def main():
            answers = await client.request_jobs(
                [{"containers": ["echo"], "data": {"n": 1}}, {"containers": ["bad"], "data": {}}]
            )
            done = await client.get_job_result_sync(answers[0]["id"])
            return {"answers": answers, "done": done}
        """,
        node_url,
    )
    good, bad = result["answers"]
    assert set(good) == {"id"} and is_uuid(good["id"])
    assert bad == {"error": "Container not supported", "params": {"container": "bad"}}
    assert result["done"]["result"] == {"container": "echo", "output": {"n": 1}}


def test_get_job_results_and_intermediate(node_url: str) -> None:
    result = run_library(
        """
        async def main():
            chained = await client.request_job({"containers": ["echo", "inner"], "data": {"c": 1}})
            single = await client.request_job({"containers": ["echo"], "data": {"s": 1}})
            await client.get_job_result_sync(chained)
            await client.get_job_result_sync(single)
            return {
                "ids": [chained, single],
                "plain": await client.get_job_results([chained, single]),
                "intermediate": await client.get_job_results([chained, "unknown-id", single], intermediate=True),
                "empty": await client.get_job_results([]),
            }
        """,
        node_url,
    )
    chained, single = result["ids"]
    assert [job["id"] for job in result["plain"]] == [chained, single]
    for job in result["plain"]:
        assert set(job) == {"id", "status", "result"}
    assert [job["id"] for job in result["intermediate"]] == [chained, single]
    with_chain, with_single = result["intermediate"]
    assert with_chain["intermediate_results"] == [{"container": "echo", "output": {"c": 1}}]
    assert with_chain["result"] == {"container": "inner", "output": {"c": 1}}
    assert with_single["intermediate_results"] == []
    assert result["empty"] == []


def test_get_jobs_by_pending(node_url: str) -> None:
    result = run_library(
        """
        import uuid
        async def main():
            done = await client.request_job({"containers": ["echo"], "data": {}})
            await client.get_job_result_sync(done)
            running = str(uuid.uuid4())
            await client.record_status(running, "running", {"containers": ["echo"], "data": {}})
            return {
                "done": done,
                "running": running,
                "all": await client.get_jobs(),
                "pending": await client.get_jobs(pending=True),
                "completed": await client.get_jobs(pending=False),
            }
        """,
        node_url,
    )
    assert result["running"] in result["pending"] and result["done"] not in result["pending"]
    assert result["done"] in result["completed"] and result["running"] not in result["completed"]
    assert set(result["all"]) == set(result["pending"]) | set(result["completed"])


def test_record_status(node_url: str) -> None:
    job_id = str(uuid.uuid4())
    result = run_library(
        f"""
        async def main():
            job = {{"containers": ["echo"], "data": {{"x": 1}}}}
            running = await client.record_status("{job_id}", "running", job)
            after_running = await client.get_job_results(["{job_id}"])
            bogus = await capture(client.record_status("{job_id}", "bogus", job))
            # The docs' curl omits `data`: only id/status/containers are needed.
            success = await client.record_status("{job_id}", "success", {{"containers": ["echo"]}})
            after_success = await client.get_job_results(["{job_id}"])
            return {{"running": running, "after_running": after_running, "bogus": bogus,
                     "success": success, "after_success": after_success}}
        """,
        node_url,
    )
    assert result["running"] is None
    assert result["after_running"] == [{"id": job_id, "status": "running", "result": None}]
    assert result["bogus"]["error"]["type"] == "APIError"
    assert result["bogus"]["error"]["status_code"] == 400
    assert result["bogus"]["error"]["api_message"] == "Status is invalid"
    assert result["success"] is None
    # success/failed are stored with empty results (§3.10).
    assert result["after_success"] == [{"id": job_id, "status": "success", "result": None}]


def test_get_job_result_sync_on_a_failed_job_returns_it(node_url: str) -> None:
    result = run_library(
        """
        async def main():
            job_id = await client.request_job({"containers": ["dead"], "data": {"x": 1}})
            return await client.get_job_result_sync(job_id)
        """,
        node_url,
    )
    assert is_uuid(result["id"])
    assert result["status"] == "failed"
    assert result["result"]["container"] == "dead"
    assert result["result"]["error"].startswith("could not reach the container")
    assert "output" not in result["result"]


def test_request_stream_repeatedly(node_url: str) -> None:
    """Trap 9 with the real client: the first item must be exactly the id, every time."""
    result = run_library(
        f"""
        async def main():
            runs = []
            for n in range({STREAM_REPEATS}):
                items = []
                text = f"stream {{n}}: ünïcode words, one by one ✓"
                async for item in client.request_stream({{"containers": ["echo"], "data": {{"prompt": text}}}}):
                    items.append(item)
                runs.append({{"text": text, "items": items}})
            failed = await capture(_collect(client.request_stream({{"containers": ["bad"], "data": {{}}}})))
            return {{"runs": runs, "failed": failed}}

        async def _collect(generator):
            return [item async for item in generator]
        """,
        node_url,
    )
    ids = []
    for run in result["runs"]:
        first, *rest = run["items"]
        assert isinstance(first, str) and is_uuid(first), f"first item is not exactly a UUID: {first!r}"
        assert all(isinstance(item, dict) for item in rest)  # bytes
        assert "".join(item["__bytes__"] for item in rest) == run["text"]
        ids.append(first)
    assert len(set(ids)) == STREAM_REPEATS
    assert result["failed"]["error"]["message"] == "[405] Container not supported - [container=bad]"


def test_request_delegated_subscription_on_a_chain_disabled_node(node_url: str) -> None:
    with FakeRpc(chain_id=31337) as rpc:
        result = run_library(
            f"""
            from infernet_client.chain.rpc import RPC
            from infernet_client.chain.subscription import Subscription
            ZERO = "0x0000000000000000000000000000000000000000"

            async def main():
                sub = Subscription("0x5FbDB2315678afecb367f032d93F642f64180aa3", 0, 3, 2, 2, ["echo"],
                                   False, ZERO, 0, ZERO, ZERO)
                rpc = RPC("{rpc.url}")
                return await capture(client.request_delegated_subscription(
                    sub, rpc, rpc.get_checksum_address("{TEST_COORDINATOR}"), {int(time.time()) + 600}, 7,
                    "{TEST_PRIVATE_KEY}", {{"input": "hi"}}))
            """,
            node_url,
        )
        methods = [call["method"] for call in rpc.requests]
    assert result["error"]["type"] == "APIError"
    assert result["error"]["status_code"] == 405
    assert result["error"]["api_message"] == "Chain not enabled"
    assert methods == ["eth_chainId"]


def test_get_job_results_for_a_thousand_job_batch(node_url: str) -> None:
    # ~40 KB of URL: past aiohttp's default 8,190-byte request line (server.max_url_bytes).
    result = run_library(
        """
        async def main():
            answers = await client.request_jobs([{"containers": ["echo"], "data": {"n": n}} for n in range(1000)])
            ids = [answer["id"] for answer in answers]
            for _ in range(100):
                jobs = await client.get_job_results(ids)
                if all(job["status"] != "running" for job in jobs):
                    break
                await asyncio.sleep(0.2)
            return {"ids": ids, "jobs": jobs}
        """,
        node_url,
    )
    assert len(result["ids"]) == 1000
    assert [job["id"] for job in result["jobs"]] == result["ids"]
    assert [job["result"]["output"] for job in result["jobs"]] == [{"n": n} for n in range(1000)]
