"""What a managed container looks like to Docker: names, ports, GPUs, reuse, image references."""

from __future__ import annotations

from typing import Any

import pytest

from node.config import ContainerConfig, DockerConfig
from node.services.docker_spec import (
    LABEL_HASH,
    LABEL_ID,
    LABEL_MANAGED,
    backoff_seconds,
    build_spec,
    container_name,
    has_tag_or_digest,
    labelled_port,
    ours,
    parse_docker_time_ns,
    published_port,
    qualified_image,
    registry_of,
    reusable,
)

IMAGE_ID = "sha256:" + "a" * 64


def container(**fields: Any) -> ContainerConfig:
    return ContainerConfig(
        id=fields.pop("id", "echo"), image=fields.pop("image", "infernet-local/hello-world:latest"), **fields
    )


def test_name_is_prefix_and_id() -> None:
    assert container_name(DockerConfig(), "echo") == "infernet-echo"
    assert container_name(DockerConfig(container_prefix="test-1-"), "echo") == "test-1-echo"


def test_bridge_publishes_service_port_on_loopback_with_a_docker_picked_port() -> None:
    spec = build_spec(container(), DockerConfig(), IMAGE_ID)
    assert spec.body["Image"] == "infernet-local/hello-world:latest"
    assert spec.body["ExposedPorts"] == {"3000/tcp": {}}
    assert spec.body["HostConfig"]["PortBindings"] == {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert spec.body["HostConfig"]["RestartPolicy"] == {"Name": "no"}
    assert "NetworkMode" not in spec.body["HostConfig"]
    assert spec.host_port is None
    assert spec.body["Labels"][LABEL_MANAGED] == "true"
    assert spec.body["Labels"][LABEL_ID] == "echo"


def test_bridge_with_a_configured_port_and_bind_host() -> None:
    spec = build_spec(container(port=3005), DockerConfig(bind_host="0.0.0.0"), IMAGE_ID)
    assert spec.body["HostConfig"]["PortBindings"] == {"3000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "3005"}]}
    assert spec.host_port == 3005


def test_command_env_volumes_and_gpu() -> None:
    spec = build_spec(
        container(command="--model 'big one' -v", env={"B": "2", "A": "1"}, volumes=("/data:/data:ro",), gpu=True),
        DockerConfig(),
        IMAGE_ID,
    )
    assert spec.body["Cmd"] == ["--model", "big one", "-v"]
    assert spec.body["Env"] == ["A=1", "B=2"]
    assert spec.body["HostConfig"]["Binds"] == ["/data:/data:ro"]
    assert spec.body["HostConfig"]["DeviceRequests"] == [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]


def test_no_command_keeps_the_image_cmd() -> None:
    assert "Cmd" not in build_spec(container(command="  "), DockerConfig(), IMAGE_ID).body


def test_host_mode_gives_the_service_its_port_and_loopback() -> None:
    spec = build_spec(container(port=3100), DockerConfig(network_mode="host"), IMAGE_ID)
    assert spec.body["HostConfig"]["NetworkMode"] == "host"
    assert "PortBindings" not in spec.body["HostConfig"]
    assert "PORT=3100" in spec.body["Env"] and "HOST=127.0.0.1" in spec.body["Env"]
    assert spec.host_port == 3100


def test_host_mode_operator_host_wins_and_env_port_is_honoured() -> None:
    spec = build_spec(container(env={"PORT": "3200", "HOST": "0.0.0.0"}), DockerConfig(network_mode="host"), IMAGE_ID)
    assert "PORT=3200" in spec.body["Env"] and "HOST=0.0.0.0" in spec.body["Env"]
    assert spec.host_port == 3200


def test_host_mode_without_a_port_needs_an_automatic_one() -> None:
    with pytest.raises(ValueError):
        build_spec(container(), DockerConfig(network_mode="host"), IMAGE_ID)
    spec = build_spec(container(), DockerConfig(network_mode="host"), IMAGE_ID, auto_port=41000)
    assert "PORT=41000" in spec.body["Env"] and spec.host_port == 41000


def test_automatic_host_port_is_not_part_of_the_identity() -> None:
    first = build_spec(container(), DockerConfig(network_mode="host"), IMAGE_ID, auto_port=41000)
    second = build_spec(container(), DockerConfig(network_mode="host"), IMAGE_ID, auto_port=42000)
    assert first.config_hash == second.config_hash


@pytest.mark.parametrize(
    "change",
    [
        {"command": "other"},
        {"env": {"A": "2"}},
        {"volumes": ("/x:/y",)},
        {"gpu": True},
        {"port": 3001},
    ],
)
def test_any_configuration_change_changes_the_identity(change: dict[str, Any]) -> None:
    base = build_spec(container(env={"A": "1"}), DockerConfig(), IMAGE_ID)
    changed = build_spec(container(**{"env": {"A": "1"}, **change}), DockerConfig(), IMAGE_ID)
    assert base.config_hash != changed.config_hash


def test_network_mode_and_image_change_the_identity() -> None:
    base = build_spec(container(port=3000), DockerConfig(), IMAGE_ID)
    assert base.config_hash != build_spec(container(port=3000), DockerConfig(network_mode="host"), IMAGE_ID).config_hash
    assert base.config_hash != build_spec(container(port=3000), DockerConfig(), "sha256:" + "b" * 64).config_hash


def test_bearer_description_and_guardian_fields_do_not_recreate_the_container() -> None:
    base = build_spec(container(), DockerConfig(), IMAGE_ID)
    other = build_spec(
        container(description="x", bearer="token-123456", allowed_ips=("10.0.0.0/8",), external=False, timeout=5),
        DockerConfig(),
        IMAGE_ID,
    )
    assert base.config_hash == other.config_hash


def inspect_of(spec_labels: dict[str, str], image: str = IMAGE_ID, **extra: Any) -> dict[str, Any]:
    return {"Image": image, "Config": {"Labels": spec_labels}, **extra}


def test_reusable_only_with_the_same_hash_and_image() -> None:
    spec = build_spec(container(), DockerConfig(), IMAGE_ID)
    assert reusable(inspect_of(spec.body["Labels"]), spec)
    assert not reusable(inspect_of({**spec.body["Labels"], LABEL_HASH: "other"}), spec)
    assert not reusable(inspect_of(spec.body["Labels"], image="sha256:" + "c" * 64), spec)
    assert ours(inspect_of(spec.body["Labels"]))
    assert not ours(inspect_of({}))
    assert not ours({"Config": {"Labels": None}})


def test_published_and_labelled_ports() -> None:
    inspect = {
        "NetworkSettings": {"Ports": {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}},
        "Config": {"Labels": {"io.infernet-node.host-port": "41000"}},
    }
    assert published_port(inspect) == 49153
    assert labelled_port(inspect) == 41000
    assert published_port({"NetworkSettings": {"Ports": {"3000/tcp": None}}}) is None
    assert published_port({}) is None
    assert labelled_port({"Config": {}}) is None


@pytest.mark.parametrize(
    ("image", "registry", "qualified"),
    [
        ("ubuntu", "docker.io", "docker.io/library/ubuntu"),
        ("ubuntu:22.04", "docker.io", "docker.io/library/ubuntu:22.04"),
        (
            "ritualnetwork/hello-world-infernet:latest",
            "docker.io",
            "docker.io/ritualnetwork/hello-world-infernet:latest",
        ),
        ("ghcr.io/org/img:1", "ghcr.io", "ghcr.io/org/img:1"),
        ("127.0.0.1:5000/img", "127.0.0.1:5000", "127.0.0.1:5000/img"),
        ("localhost/img", "localhost", "localhost/img"),
    ],
)
def test_image_references(image: str, registry: str, qualified: str) -> None:
    assert registry_of(image) == registry
    assert qualified_image(image) == qualified


def test_tags_and_digests() -> None:
    assert has_tag_or_digest("a/b:1")
    assert has_tag_or_digest("a/b@sha256:" + "0" * 64)
    assert not has_tag_or_digest("127.0.0.1:5000/img")
    assert not has_tag_or_digest("ubuntu")


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_seconds(0) == 0.5


def test_docker_times() -> None:
    assert parse_docker_time_ns("2024-05-01T12:00:00.123456789Z") == 1714564800_123456789
    assert parse_docker_time_ns("2024-05-01T12:00:00Z") == 1714564800_000000000
    assert parse_docker_time_ns("2024-05-01T14:00:00.5+02:00") == 1714564800_500000000
    assert parse_docker_time_ns("0001-01-01T00:00:00Z") is None
    assert parse_docker_time_ns("") is None
    assert parse_docker_time_ns("garbage") is None
