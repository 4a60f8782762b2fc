"""The built images (infernet-local/*:latest) run in real Docker with host networking.

Skipped only when no Docker daemon answers. The images are built or refreshed first through
scripts/provision.sh, so these tests always exercise the current sources.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.containers.helpers import (
    IMAGES,
    get_json,
    job,
    post_json,
    read_stream,
    require_docker_images,
    service_container,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    require_docker_images()


@pytest.fixture(scope="module")
def hello_world_container(images: None) -> Iterator[str]:
    with service_container(IMAGES["hello-world"], {"STREAM_DELAY_MS": "30"}) as url:
        yield url


@pytest.fixture(scope="module")
def streaming_container(images: None) -> Iterator[str]:
    with service_container(IMAGES["streaming"]) as url:
        yield url


@pytest.fixture(scope="module")
def iris_container(images: None) -> Iterator[str]:
    with service_container(IMAGES["iris-classifier"]) as url:
        yield url


async def test_hello_world_image_echoes_and_streams(hello_world_container: str) -> None:
    data = {"prompt": "from inside a container", "n": [1, 2]}
    assert await post_json(hello_world_container, job(data)) == (200, data)
    response, reads = await read_stream(hello_world_container, job(data, destination=2))
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert len(reads) >= 2
    assert b"".join(reads).decode() == "from inside a container"


async def test_hello_world_image_rejects_bad_json(hello_world_container: str) -> None:
    status, body = await post_json(hello_world_container, {"source": 1, "destination": 1})
    assert status == 400 and "'data'" in body["error"]


async def test_streaming_image_stream_matches_its_json_output(streaming_container: str) -> None:
    data = {"prompt": "containers stream tokens", "max_tokens": 5}
    _, reads = await read_stream(streaming_container, job(data, destination=2))
    assert len(reads) >= 2
    streamed = b"".join(reads).decode()
    assert len(streamed.split()) == 5
    assert await post_json(streaming_container, job(data)) == (200, {"output": streamed})


@pytest.mark.parametrize(
    ("measurements", "species"),
    [
        ([5.1, 3.5, 1.4, 0.2], "setosa"),
        ([7.0, 3.2, 4.7, 1.4], "versicolor"),
        ([6.3, 3.3, 6.0, 2.5], "virginica"),
    ],
)
async def test_iris_image_classifies_known_flowers(
    iris_container: str, measurements: list[float], species: str
) -> None:
    status, body = await post_json(iris_container, job({"measurements": [measurements]}))
    assert status == 200
    (prediction,) = body["predictions"]
    assert prediction["species"] == species
    probabilities = prediction["probabilities"]
    assert set(probabilities) == {"setosa", "versicolor", "virginica"}
    assert max(probabilities, key=probabilities.get) == species
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)


async def test_iris_image_accepts_a_flat_row_and_several_rows(iris_container: str) -> None:
    _, flat = await post_json(iris_container, job([6.3, 3.3, 6.0, 2.5]))
    assert [p["species"] for p in flat["predictions"]] == ["virginica"]
    rows = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4]]
    _, many = await post_json(iris_container, job({"measurements": rows}))
    assert [p["species"] for p in many["predictions"]] == ["setosa", "versicolor"]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"measurements": [[5.1, 3.5, "x", 0.2]]}, "measurements[0][2]"),
        ({"measurements": [[5.1, 3.5, 1.4]]}, "measurements[0]"),
        ({"measurements": [5.1, 3.5, -1.4, 0.2]}, "negative"),
        ({"measurements": [[1.0, 1.0, 1.0, 1.0]] * 1001}, "too many rows"),
        ({"measurements": []}, "non-empty"),
        ({"rows": [[1, 2, 3, 4]]}, "measurements"),
        ({"measurements": [[5.1, 3.5, True, 0.2]]}, "measurements[0][2]"),
    ],
    ids=["not-a-number", "three-values", "negative", "1001-rows", "empty", "wrong-key", "bool"],
)
async def test_iris_image_rejects_bad_measurements(iris_container: str, data: object, named: str) -> None:
    status, body = await post_json(iris_container, job(data))
    assert status == 400
    assert named in body["error"]


async def test_iris_image_model_ids(iris_container: str) -> None:
    assert (await get_json(iris_container, "/service-resources?model_id=iris"))[1] == {"supported": True}
    assert (await get_json(iris_container, "/service-resources?model_id=iris-classifier"))[1] == {"supported": True}
    assert (await get_json(iris_container, "/service-resources?model_id=resnet"))[1]["supported"] is False


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_images_run_as_a_non_root_user(images: None, service: str) -> None:
    user = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Config.User}}", IMAGES[service]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user and not user.startswith(("0", "root"))
