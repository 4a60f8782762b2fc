"""Where each configured service can be reached, and whether it is up.

With `manage_containers: false` the services are run by someone else, so the
node takes their `url` (or `port` on localhost) as given and lists them all as
running. The Docker manager provides the same interface for managed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from node.config import Config, ContainerConfig


@dataclass(frozen=True, slots=True)
class Endpoint:
    container_id: str
    base_url: str
    bearer: str | None
    timeout: float


class ContainerDirectory(Protocol):
    def endpoint(self, container_id: str) -> Endpoint | None:
        """The service's address, or None when it is configured but not available."""
        ...

    def unavailable_reason(self, container_id: str) -> str: ...

    def running_info(self) -> list[dict[str, Any]]:
        """`/info`'s container list: running services only."""
        ...

    def unavailable_info(self) -> list[dict[str, Any]]:
        """Configured services that are not running: `{"id", "image", "reason"}` each."""
        ...

    async def explain_broken_call(self, container_id: str) -> str | None:
        """Why a call to the service just broke off, if known (its container died); else None."""
        ...


def info_entry(container: ContainerConfig) -> dict[str, Any]:
    return {
        "id": container.id,
        "description": container.description,
        "external": container.external,
        "image": container.image,
    }


def endpoint_for(
    container: ContainerConfig,
    default_timeout: float,
    host_port: int | None = None,
    host: str = "127.0.0.1",
) -> Endpoint:
    if container.url:
        base = container.url
    else:
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        base = f"http://{host}:{host_port or container.port}"
    return Endpoint(
        container_id=container.id,
        base_url=base,
        bearer=container.bearer.get_secret_value() if container.bearer else None,
        timeout=container.timeout or default_timeout,
    )


class StaticDirectory:
    """Services the operator runs: always listed, reached where configured."""

    def __init__(self, config: Config) -> None:
        self._containers = list(config.containers)
        self._endpoints = {
            container.id: endpoint_for(container, config.jobs.container_timeout) for container in config.containers
        }

    def endpoint(self, container_id: str) -> Endpoint | None:
        return self._endpoints.get(container_id)

    def unavailable_reason(self, container_id: str) -> str:
        return "not configured"

    def running_info(self) -> list[dict[str, Any]]:
        return [info_entry(container) for container in self._containers]

    def unavailable_info(self) -> list[dict[str, Any]]:
        return []

    async def explain_broken_call(self, container_id: str) -> str | None:
        return None
