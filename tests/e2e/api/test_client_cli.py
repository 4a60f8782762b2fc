"""The real `infernet-client` 1.4.0 CLI against our node (client-contract.md §7, §9).

Every command that talks to a node is run as a subprocess of the client venv, and its real
output is checked, not only its exit code.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import (
    TEST_COORDINATOR,
    TEST_PRIVATE_KEY,
    FakeRpc,
    client_bin,
    client_env,
    is_uuid,
    run_cli,
    run_cli_many,
    run_library,
    subscription_params,
)

pytestmark = [pytest.mark.client]

STREAM_REPEATS = 20


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_finished(node_url: str, job_ids: list[str], deadline_s: float = 15.0) -> list[dict[str, Any]]:
    """Poll (from 127.0.0.1, like the CLI) until none of the jobs is running."""
    query = "&".join(f"id={job_id}" for job_id in job_ids)
    end = time.monotonic() + deadline_s
    while True:
        results = _get_json(f"{node_url}/api/jobs?{query}")
        if len(results) == len(job_ids) and all(r["status"] != "running" for r in results):
            return results
        if time.monotonic() > end:
            raise AssertionError(f"jobs still running after {deadline_s}s: {results}")
        time.sleep(0.05)


def submit(node_url: str, containers: str, data: Any) -> str:
    result = run_cli("job", "--url", node_url, "-c", containers, stdin=json.dumps(data))
    assert result.returncode == 0, result.describe()
    job_id = result.stdout.strip()
    assert is_uuid(job_id), result.describe()
    return job_id


# -- node information --------------------------------------------------------------------------


def test_health_prints_healthy(node_url: str) -> None:
    result = run_cli("health", "--url", node_url)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "healthy\n"


def test_health_reads_server_url_from_the_environment(node_url: str) -> None:
    result = run_cli("health", env={"SERVER_URL": node_url})
    assert (result.returncode, result.stdout) == (0, "healthy\n"), result.describe()


def test_info_prints_node_information(node_url: str) -> None:
    result = run_cli("info", "--url", node_url)
    assert result.returncode == 0, result.describe()
    info = result.json()
    assert {"version", "containers", "pending", "chain"} <= set(info)
    assert "pending_jobs" not in info  # trap 3
    assert info["chain"] == {"enabled": False, "address": ""}
    assert set(info["pending"]) == {"offchain", "onchain"}
    assert all(isinstance(value, int) for value in info["pending"].values())
    by_id = {container["id"]: container for container in info["containers"]}
    assert {"echo", "inner", "proofy", "restricted"} <= set(by_id)
    for container in by_id.values():
        assert set(container) >= {"id", "description", "external", "image"}
    assert by_id["echo"]["external"] is True
    assert by_id["echo"]["description"] == "hello-world echo"
    assert by_id["inner"]["external"] is False


def test_resources_with_node_lists_each_reachable_container(node_url: str) -> None:
    result = run_cli("resources", "--node", node_url)
    assert result.returncode == 0, result.describe()
    resources = result.json()
    assert {"echo", "inner", "proofy", "restricted"} <= set(resources)
    assert "dead" not in resources  # containers that fail are omitted
    echo = resources["echo"]
    assert echo["version"] == "0.1.0"
    assert echo["service_id"] == "hello-world"
    assert isinstance(echo["hardware_capabilities"], list) and echo["hardware_capabilities"]
    assert isinstance(echo["compute_capability"], list)


def test_check_model_with_node(node_url: str) -> None:
    supported, unsupported = run_cli_many(
        ("check-model", "--node", node_url, "-m", "hello-world"),
        ("check-model", "--node", node_url, "--model-id", "no-such-model"),
    )
    assert supported.returncode == 0, supported.describe()
    answer = supported.json()
    assert answer["echo"] == {"supported": True}
    assert "dead" not in answer

    assert unsupported.returncode == 0, unsupported.describe()
    assert unsupported.json()["echo"]["supported"] is False


# -- jobs --------------------------------------------------------------------------------------


def test_job_prints_a_uuid_and_the_job_runs(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "echo", stdin='{"a": 1}')
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and is_uuid(lines[0]), result.describe()
    [job] = wait_finished(node_url, [lines[0]])
    assert job == {"id": lines[0], "status": "success", "result": {"container": "echo", "output": {"a": 1}}}


def test_job_reads_input_from_a_file(node_url: str, tmp_path: Path) -> None:
    source = tmp_path / "input.json"
    source.write_text('{"from": "file"}')
    result = run_cli("job", "--url", node_url, "-c", "echo", "-i", str(source), "--sync")
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == {"from": "file"}


def test_job_sync_prints_the_container_output(node_url: str) -> None:
    data = {"a": 1, "nested": {"list": [1, "two", None, True]}, "text": "héllo ✓"}
    result = run_cli("job", "--url", node_url, "-c", "echo", "--sync", stdin=json.dumps(data))
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == data
    assert result.stdout == json.dumps(data, indent=2) + "\n"


def test_job_sync_through_a_chain(node_url: str) -> None:
    data = {"chain": ["echo", "inner"]}
    result = run_cli("job", "--url", node_url, "-c", "echo,inner", "--sync", stdin=json.dumps(data))
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == data


def test_job_sync_with_string_data_prints_it_raw(node_url: str) -> None:
    # The CLI sends whatever JSON it read as `data` (trap 19): a bare string here.
    result = run_cli("job", "--url", node_url, "-c", "echo", "--sync", stdin='"plain text"')
    assert result.returncode == 0, result.describe()
    assert result.stdout == "plain text\n"


def test_job_sync_with_list_data(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "echo", "--sync", stdin="[1, 2]")
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == [1, 2]


def test_job_sync_on_a_failing_container_prints_the_error(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "dead", "--sync", stdin="{}")
    assert result.returncode == 0, result.describe()
    assert result.stdout.startswith("could not reach the container"), result.describe()


def test_job_with_an_unknown_container_fails_with_api_error(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "bad", stdin='{"a": 1}')
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] Container not supported - [container=bad]" in result.stderr
    assert result.stdout == ""


def test_job_requiring_proof_from_a_container_without_proofs(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "echo", "--requires-proof", "true", stdin="{}")
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] Container does not generate proof - [container=echo]" in result.stderr


def test_job_requiring_proof_from_a_proof_container(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "proofy", "--requires-proof", "yes", "--sync", stdin='{"p": 1}')
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == {"p": 1}


def test_job_whose_first_container_is_internal(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "inner,echo", stdin="{}")
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] First container must be external - [first_container=inner]" in result.stderr


def test_job_on_a_container_restricted_to_other_ips(node_url: str) -> None:
    result = run_cli("job", "--url", node_url, "-c", "restricted", stdin="{}")
    assert result.returncode == 1, result.describe()
    assert (
        "APIError: [405] Container not allowed for address - [container=restricted, address=127.0.0.1]" in result.stderr
    )


# -- streaming ---------------------------------------------------------------------------------


def _stream_once(node_url: str, text: str) -> tuple[str, Any]:
    result = run_cli("stream", "--url", node_url, "-c", "echo", stdin=json.dumps({"prompt": text}))
    return text, result


def test_stream_prints_the_job_id_line_then_the_output(node_url: str) -> None:
    """Repeated to catch the framing race (trap 9): the id line must be a read of its own."""
    texts = [f"stream {n}: hello wörld, streamed word by word ✓" for n in range(STREAM_REPEATS)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda text: _stream_once(node_url, text), texts))
    ids = []
    for text, result in outcomes:
        assert result.returncode == 0, result.describe()
        first, _, rest = result.stdout.partition("\n")
        assert first.startswith("Job ID: "), result.describe()
        job_id = first[len("Job ID: ") :]
        assert is_uuid(job_id), f"first line is not exactly a UUID: {first!r}\n{result.describe()}"
        assert rest == text + "\n", result.describe()
        ids.append(job_id)
    assert len(set(ids)) == STREAM_REPEATS

    # The stored result of a streamed job is the joined text (§3.7).
    results = wait_finished(node_url, ids[:3])
    for job_id, (text, _), job in zip(ids[:3], outcomes[:3], results, strict=True):
        assert job == {"id": job_id, "status": "success", "result": {"container": "echo", "output": {"output": text}}}


def test_stream_to_an_output_file(node_url: str, tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    result = run_cli("stream", "--url", node_url, "-c", "echo", "-o", str(target), stdin='"to a file"')
    assert result.returncode == 0, result.describe()
    first = result.stdout.splitlines()[0]
    assert first.startswith("Job ID: ") and is_uuid(first[len("Job ID: ") :]), result.describe()
    assert target.read_text() == "to a file\n"


def test_stream_from_an_unknown_container_fails_with_api_error(node_url: str) -> None:
    result = run_cli("stream", "--url", node_url, "-c", "bad", stdin="{}")
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] Container not supported - [container=bad]" in result.stderr
    assert "Job ID" not in result.stdout


# -- results and ids ---------------------------------------------------------------------------


def test_results_with_and_without_intermediate(node_url: str) -> None:
    submitted = run_cli_many(
        {"args": ("job", "--url", node_url, "-c", "echo,inner"), "stdin": '{"k": "chained"}'},
        {"args": ("job", "--url", node_url, "-c", "echo"), "stdin": '{"k": "single"}'},
    )
    chained, single = (result.stdout.strip() for result in submitted)
    assert is_uuid(chained) and is_uuid(single), [result.describe() for result in submitted]
    wait_finished(node_url, [chained, single])

    plain, full = run_cli_many(
        ("results", "--url", node_url, "--id", chained, "--id", single),
        ("results", "--url", node_url, "--id", chained, "--id", single, "--intermediate"),
    )
    assert plain.returncode == 0, plain.describe()
    assert plain.json() == [
        {"id": chained, "status": "success", "result": {"container": "inner", "output": {"k": "chained"}}},
        {"id": single, "status": "success", "result": {"container": "echo", "output": {"k": "single"}}},
    ]

    assert full.returncode == 0, full.describe()
    first, second = full.json()
    assert first["id"] == chained and second["id"] == single
    assert first["intermediate_results"] == [{"container": "echo", "output": {"k": "chained"}}]
    assert second["intermediate_results"] == []
    assert first["result"] == {"container": "inner", "output": {"k": "chained"}}


def test_results_drop_unknown_ids(node_url: str) -> None:
    known = submit(node_url, "echo", {})
    result = run_cli("results", "--url", node_url, "--id", "00000000-0000-4000-8000-000000000000", "--id", known)
    assert result.returncode == 0, result.describe()
    assert [job["id"] for job in result.json()] == [known]


def test_ids_by_status(node_url: str) -> None:
    done = submit(node_url, "echo", {"ids": 1})
    wait_finished(node_url, [done])
    # A job recorded as running through the library (PUT /api/status) is pending.
    running = run_library(
        """
        import uuid
        async def main():
            job_id = str(uuid.uuid4())
            await client.record_status(job_id, "running", {"containers": ["echo"], "data": {}})
            return job_id
        """,
        node_url,
    )

    everything, pending, completed, explicit_all = run_cli_many(
        ("ids", "--url", node_url),
        ("ids", "--url", node_url, "--status", "pending"),
        ("ids", "--url", node_url, "--status", "COMPLETED"),
        ("ids", "--url", node_url, "--status", "all"),
    )
    for result in (everything, pending, completed, explicit_all):
        assert result.returncode == 0, result.describe()
        assert isinstance(result.json(), list)
    assert running in pending.json() and done not in pending.json()
    assert done in completed.json() and running not in completed.json()
    assert {done, running} <= set(everything.json())
    assert set(everything.json()) == set(explicit_all.json())
    assert set(everything.json()) == set(pending.json()) | set(completed.json())


# -- delegated subscriptions -------------------------------------------------------------------


@pytest.fixture
def sub_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "key": tmp_path / "key.txt",
        "params": tmp_path / "params.json",
        "input": tmp_path / "input.json",
    }
    files["key"].write_text(TEST_PRIVATE_KEY + "\n")
    files["params"].write_text(json.dumps(subscription_params(["echo"])))
    files["input"].write_text('{"input": "hi"}')
    return files


def _sub_args(node_url: str, rpc: FakeRpc, files: dict[str, Path], with_key: bool = True) -> list[str]:
    args = [
        "sub",
        "--url", node_url,
        "--rpc-url", rpc.url,
        "--address", TEST_COORDINATOR,
        "--expiry", str(int(time.time()) + 600),
        "--params", str(files["params"]),
        "-i", str(files["input"]),
        "--nonce", "7",
    ]  # fmt: skip
    if with_key:
        args += ["--key", str(files["key"])]
    return args


def test_sub_against_a_chain_disabled_node(node_url: str, sub_files: dict[str, Path]) -> None:
    with FakeRpc(chain_id=31337) as rpc:
        result = run_cli(*_sub_args(node_url, rpc, sub_files))
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] Chain not enabled" in result.stderr, result.describe()
    assert "Success" not in result.stdout
    # The client asked the chain for its id before signing.
    assert [call["method"] for call in rpc.requests] == ["eth_chainId"]


def test_sub_private_key_env_is_a_file_path(node_url: str, sub_files: dict[str, Path]) -> None:
    """Trap 14: for `sub`, PRIVATE_KEY names a key *file*; a raw key there is a usage error."""
    with FakeRpc() as rpc:
        args = tuple(_sub_args(node_url, rpc, sub_files, with_key=False))
        as_path, as_key = run_cli_many(
            {"args": args, "env": {"PRIVATE_KEY": str(sub_files["key"])}},
            {"args": args, "env": {"PRIVATE_KEY": TEST_PRIVATE_KEY}},
        )
    assert as_path.returncode == 1, as_path.describe()
    assert "APIError: [405] Chain not enabled" in as_path.stderr
    assert as_key.returncode == 2, as_key.describe()
    assert "No such file or directory" in as_key.stderr


# -- the client's own quirks (traps 13 and 15) -------------------------------------------------


def test_trap_13_requires_proof_takes_a_value_and_rpc_url_has_a_dash(node_url: str) -> None:
    bare, underscore = run_cli_many(
        {"args": ("job", "--url", node_url, "-c", "echo", "--requires-proof"), "stdin": "{}"},
        ("sub", "--rpc_url", "http://127.0.0.1:1"),
    )
    assert bare.returncode == 2, bare.describe()
    assert "requires an argument" in bare.stderr

    assert underscore.returncode == 2, underscore.describe()
    assert "No such option '--rpc_url'" in underscore.stderr


def test_trap_15_wheel_metadata_pins_a_missing_infernet_ml(client_venv: Path) -> None:
    """`pip install infernet-client==1.4.0` cannot work: the wheel wants infernet-ml>=2.0.0.81."""
    check = subprocess.run(
        [str(client_bin("python")), "-m", "pip", "check"],
        capture_output=True,
        text=True,
        env=client_env(),
        timeout=60,
    )
    assert "infernet-client 1.4.0 has requirement infernet-ml<3.0.0,>=2.0.0.81" in check.stdout, check.stdout
    # ... and yet, installed with --no-deps next to infernet-ml 2.0.0, it imports and runs.
    versions = subprocess.run(
        [
            str(client_bin("python")),
            "-c",
            "import importlib.metadata as m, infernet_client.node;"
            "print(m.version('infernet-client'), m.version('infernet-ml'), m.version('web3'))",
        ],
        capture_output=True,
        text=True,
        env=client_env(),
        timeout=60,
    )
    assert versions.stdout.split() == ["1.4.0", "2.0.0", "6.20.4"], versions.stderr
