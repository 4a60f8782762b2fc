"""Pure helpers for the Docker manager: what a managed container looks like to Docker.

No I/O here, so every rule (names, labels, ports, GPUs, reuse, image references, backoff)
is unit-tested without a daemon. `docker_manager.py` does the talking.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from node.config import ContainerConfig, DockerConfig

# Every service listens on this port inside its container (bridge mode).
SERVICE_PORT = 3000
_SERVICE_PORT_KEY = f"{SERVICE_PORT}/tcp"

LABEL_MANAGED = "io.infernet-node.managed"
LABEL_ID = "io.infernet-node.container-id"
LABEL_HASH = "io.infernet-node.config-hash"
LABEL_PORT = "io.infernet-node.host-port"

# Docker Hub, for image references that name no registry.
DEFAULT_REGISTRY = "docker.io"


def container_name(docker: DockerConfig, container_id: str) -> str:
    return f"{docker.container_prefix}{container_id}"


@dataclass(frozen=True, slots=True)
class Spec:
    """The body of `POST /containers/create`, and what identifies it for reuse."""

    body: dict[str, Any]
    config_hash: str
    # The local image the container must run (a re-tagged image means a new container).
    image_id: str
    # The port the node reaches the service on; None in bridge mode with an automatic port
    # (Docker picks one at every start, read back from the container).
    host_port: int | None


def service_port(container: ContainerConfig, docker: DockerConfig) -> int | None:
    """The port the operator asked for, if any (host mode also honours env PORT)."""
    if container.port is not None:
        return container.port
    if docker.network_mode == "host" and container.env.get("PORT", "").isdigit():
        return int(container.env["PORT"])
    return None


def build_spec(
    container: ContainerConfig,
    docker: DockerConfig,
    image_id: str,
    auto_port: int | None = None,
) -> Spec:
    """The create body for `container`.

    `image_id` (the local image's sha256) is part of the hash, so a re-tagged image
    recreates the container. In host mode with no configured port, `auto_port` is the
    port chosen for the service; it is left out of the hash so that a container created
    with an automatic port can be reused with the port it already has.
    """
    wanted_port = service_port(container, docker)
    env = dict(container.env)
    host_config: dict[str, Any] = {
        # The manager restarts containers itself (bounded, with backoff, and it must know
        # a container is down the moment it dies); Docker's own policy would race with it.
        "RestartPolicy": {"Name": "no"},
        "Binds": list(container.volumes),
    }
    if container.gpu:
        host_config["DeviceRequests"] = [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
    # Docker resolves the name to `image_id` (just inspected); `docker ps` shows the name.
    body: dict[str, Any] = {"Image": container.image}
    port_for_hash: Any
    if docker.network_mode == "host":
        port = wanted_port if wanted_port is not None else auto_port
        if port is None:
            raise ValueError("host network mode needs a port: configure one or pass auto_port")
        host_config["NetworkMode"] = "host"
        env["PORT"] = str(port)
        # The service would listen on every interface of the host otherwise.
        env.setdefault("HOST", "127.0.0.1")
        host_port: int | None = port
        port_for_hash = wanted_port if wanted_port is not None else "auto"
        hashed_env = dict(env)
        if wanted_port is None:
            hashed_env["PORT"] = "auto"
    else:
        body["ExposedPorts"] = {_SERVICE_PORT_KEY: {}}
        host_config["PortBindings"] = {
            _SERVICE_PORT_KEY: [{"HostIp": docker.bind_host, "HostPort": str(wanted_port) if wanted_port else ""}]
        }
        host_port = wanted_port
        port_for_hash = wanted_port if wanted_port is not None else "auto"
        hashed_env = env
    if container.command.strip():
        body["Cmd"] = shlex.split(container.command)
    body["Env"] = [f"{key}={value}" for key, value in sorted(env.items())]
    body["HostConfig"] = host_config
    identity = {
        "image": image_id,
        "cmd": body.get("Cmd"),
        "env": sorted(hashed_env.items()),
        "host_config": {key: value for key, value in host_config.items() if key != "PortBindings"},
        "network_mode": docker.network_mode,
        "bind_host": docker.bind_host if docker.network_mode == "bridge" else None,
        "port": port_for_hash,
    }
    config_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    body["Labels"] = {
        LABEL_MANAGED: "true",
        LABEL_ID: container.id,
        LABEL_HASH: config_hash,
        **({LABEL_PORT: str(host_port)} if host_port is not None else {}),
    }
    return Spec(body=body, config_hash=config_hash, image_id=image_id, host_port=host_port)


def published_port(inspect: dict[str, Any]) -> int | None:
    """The host port Docker bound to the service port, from `GET /containers/{id}/json`."""
    ports = ((inspect.get("NetworkSettings") or {}).get("Ports") or {}).get(_SERVICE_PORT_KEY) or []
    for binding in ports:
        value = str(binding.get("HostPort") or "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def labelled_port(inspect: dict[str, Any]) -> int | None:
    value = ((inspect.get("Config") or {}).get("Labels") or {}).get(LABEL_PORT, "")
    return int(value) if str(value).isdigit() else None


def reusable(inspect: dict[str, Any], spec: Spec) -> bool:
    """Whether an existing container was created by us from this very spec and image."""
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_HASH) == spec.config_hash and inspect.get("Image") == spec.image_id


def ours(inspect: dict[str, Any]) -> bool:
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_MANAGED) == "true"


def _has_registry(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost"


def registry_of(image: str) -> str:
    first, slash, _ = image.partition("/")
    return first if slash and _has_registry(first) else DEFAULT_REGISTRY


def qualified_image(image: str) -> str:
    """`image` with its registry spelled out (`ubuntu` → `docker.io/library/ubuntu`).

    aiodocker only sends credentials for references that name a registry; Docker stores
    the pulled image under its short name either way.
    """
    first, slash, _ = image.partition("/")
    if slash and _has_registry(first):
        return image
    if not slash:
        return f"{DEFAULT_REGISTRY}/library/{image}"
    return f"{DEFAULT_REGISTRY}/{image}"


def has_tag_or_digest(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]
    return ":" in last or "@" in image


def backoff_seconds(attempt: int, first: float = 0.5, cap: float = 30.0) -> float:
    """Delay before restart number `attempt` (1-based): 0.5 s, 1 s, 2 s, ... at most 30 s."""
    return min(cap, first * 2 ** max(0, attempt - 1))


def parse_docker_time_ns(value: str | None) -> int | None:
    """Nanoseconds since the epoch from Docker's RFC 3339 times (`...T12:00:00.123456789Z`)."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    fraction_ns = 0
    main, dot, rest = text.partition(".")
    offset = ""
    if dot:
        digits = ""
        for index, char in enumerate(rest):
            if not char.isdigit():
                offset = rest[index:]
                break
            digits += char
        fraction_ns = int((digits + "000000000")[:9]) if digits else 0
        text = main + offset
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + fraction_ns
