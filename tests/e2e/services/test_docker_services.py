"""Jobs through the three shipped services, each in a container the node started itself.

One node for the module (bridge networking, ports published on 127.0.0.1 and picked by Docker),
driven over HTTP and with the real `infernet-client` CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.services.support import (
    docker_inspect,
    info,
    managed_node,
    new_prefix,
    remove_containers,
    run_job,
    service,
)
from tests.support.client import CliResult, is_uuid, run_cli
from tests.support.processes import NodeProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SAMPLES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([7.0, 3.2, 4.7, 1.4], "versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "virginica"),
]


@pytest.fixture(scope="module")
def prefix(docker_images: None) -> Iterator[str]:
    value = new_prefix()
    yield value
    remove_containers(value)


@pytest.fixture(scope="module")
def node(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    containers = [
        service("hello-world", description="echo"),
        service("streaming", "streaming", description="token stream", env={"STREAM_DELAY_MS": "5"}),
        service("iris-classifier", "iris-classifier", description="iris species"),
        service("inner-echo", external=False),
    ]
    with managed_node(tmp_path_factory.mktemp("docker-services"), prefix, containers, on_shutdown="remove") as running:
        yield running


def test_info_lists_the_running_containers_exactly(node: NodeProcess) -> None:
    body = info(node)
    assert body["containers"] == [
        {"id": "hello-world", "description": "echo", "external": True, "image": "infernet-local/hello-world:latest"},
        {
            "id": "streaming",
            "description": "token stream",
            "external": True,
            "image": "infernet-local/streaming:latest",
        },
        {
            "id": "iris-classifier",
            "description": "iris species",
            "external": True,
            "image": "infernet-local/iris-classifier:latest",
        },
        {"id": "inner-echo", "description": "", "external": False, "image": "infernet-local/hello-world:latest"},
    ]
    assert body["unavailable_containers"] == []


def test_the_services_are_real_containers_on_loopback(node: NodeProcess, prefix: str) -> None:
    for name in ("hello-world", "streaming", "iris-classifier"):
        inspect = docker_inspect(f"{prefix}{name}")
        assert inspect is not None, f"no container {prefix}{name}"
        assert inspect["State"]["Running"]
        assert inspect["Config"]["Image"] == f"infernet-local/{name}:latest"
        assert inspect["Config"]["Labels"]["io.infernet-node.container-id"] == name
        assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "no"
        bindings = inspect["NetworkSettings"]["Ports"]["3000/tcp"]
        assert {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}


def test_hello_world_echoes(node: NodeProcess) -> None:
    data = {"prompt": "from a managed container", "n": [1, 2.5, None]}
    job = run_job(node, ["hello-world"], data)
    assert job["status"] == "success", job
    assert job["result"]["output"] == data


def test_streaming_answers_json(node: NodeProcess) -> None:
    job = run_job(node, ["streaming"], {"prompt": "managed containers stream", "max_tokens": 6})
    assert job["status"] == "success", job
    assert len(job["result"]["output"]["output"].split()) == 6


@pytest.mark.parametrize(("measurements", "species"), SAMPLES)
def test_iris_classifier_names_the_species(node: NodeProcess, measurements: list[float], species: str) -> None:
    job = run_job(node, ["iris-classifier"], {"measurements": measurements})
    assert job["status"] == "success", job
    [prediction] = job["result"]["output"]["predictions"]
    assert prediction["species"] == species
    assert max(prediction["probabilities"], key=prediction["probabilities"].get) == species


def test_a_chain_of_two_containers(node: NodeProcess) -> None:
    # hello-world echoes the measurements, iris-classifier gets its output as data.
    rows = [sample for sample, _ in SAMPLES]
    job = run_job(node, ["hello-world", "iris-classifier"], {"measurements": rows})
    assert job["status"] == "success", job
    assert [p["species"] for p in job["result"]["output"]["predictions"]] == [species for _, species in SAMPLES]


def test_a_chain_through_an_internal_container(node: NodeProcess) -> None:
    job = run_job(node, ["streaming", "inner-echo"], {"prompt": "two hops", "max_tokens": 3})
    assert job["status"] == "success", job
    assert len(job["result"]["output"]["output"].split()) == 3


# -- the real infernet-client ---------------------------------------------------------------


@pytest.mark.client
def test_client_job_sync_hello_world(node: NodeProcess, client_venv: Path) -> None:
    cli = run_cli("job", "--url", node.url, "-c", "hello-world", "--sync", stdin='{"greeting": "hi from the CLI"}')
    assert cli.returncode == 0, cli.describe()
    assert cli.json() == {"greeting": "hi from the CLI"}


@pytest.mark.client
def test_client_job_sync_streaming_and_stream(node: NodeProcess, client_venv: Path) -> None:
    data = '{"prompt": "the client streams", "max_tokens": 5}'
    cli = run_cli("job", "--url", node.url, "-c", "streaming", "--sync", stdin=data)
    assert cli.returncode == 0, cli.describe()
    text = cli.json()["output"]
    assert len(text.split()) == 5
    streamed = run_cli("stream", "--url", node.url, "-c", "streaming", stdin=data)
    assert streamed.returncode == 0, streamed.describe()
    first, _, rest = streamed.stdout.partition("\n")
    assert first.startswith("Job ID: ") and is_uuid(first.removeprefix("Job ID: "))
    assert rest.strip() == text


@pytest.mark.client
def test_client_job_sync_iris_names_each_species(node: NodeProcess, client_venv: Path) -> None:
    def classify(measurements: list[float]) -> CliResult:
        return run_cli(
            "job", "--url", node.url, "-c", "iris-classifier", "--sync", stdin=f'{{"measurements": {measurements}}}'
        )

    # One CLI process per sample, side by side: each spends seconds importing web3.
    with ThreadPoolExecutor(len(SAMPLES)) as pool:
        answers = list(pool.map(classify, [measurements for measurements, _ in SAMPLES]))
    for cli, (_, species) in zip(answers, SAMPLES, strict=True):
        assert cli.returncode == 0, cli.describe()
        assert cli.json()["predictions"][0]["species"] == species


@pytest.mark.client
def test_client_job_sync_through_a_chain(node: NodeProcess, client_venv: Path) -> None:
    cli = run_cli("job", "--url", node.url, "-c", "hello-world,iris-classifier", "--sync", stdin="[6.3, 3.3, 6.0, 2.5]")
    assert cli.returncode == 0, cli.describe()
    assert cli.json()["predictions"][0]["species"] == "virginica"


@pytest.mark.client
def test_client_info_lists_the_containers(node: NodeProcess, client_venv: Path) -> None:
    cli = run_cli("info", "--url", node.url)
    assert cli.returncode == 0, cli.describe()
    assert [entry["id"] for entry in cli.json()["containers"]] == [
        "hello-world",
        "streaming",
        "iris-classifier",
        "inner-echo",
    ]
