"""Real Docker: the node manages the shipped service images (manage_containers: true).

Skipped only when `docker info` fails (CI runs scripts/provision.sh first, so there they run).
Helpers are in support.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.containers.helpers import require_docker_images
from tests.e2e.services.support import new_prefix, remove_containers


@pytest.fixture(scope="session")
def docker_images() -> None:
    require_docker_images()


@pytest.fixture
def prefix(docker_images: None) -> Iterator[str]:
    value = new_prefix()
    yield value
    remove_containers(value)
