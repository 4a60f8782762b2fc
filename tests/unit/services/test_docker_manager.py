"""The Docker manager's decisions, against an in-memory Docker (the real one is in tests/e2e/docker).

The fake stands in for aiodocker at the adapter boundary: images, containers and their runs.
Docker's event stream is replaced by calling the manager's event handler directly, and the
service health probe by "is the container running".
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiodocker.exceptions import DockerError

from node.config import Config, parse_config
from node.logs import redact
from node.services.docker_manager import DockerManager
from node.services.docker_spec import LABEL_MANAGED

_clock = itertools.count(1_700_000_000_000_000_000, 1_000_000)


def _rfc3339(nanos: int) -> str:
    import datetime as dt

    seconds, rest = divmod(nanos, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{rest:09d}Z"


class FakeDocker:
    def __init__(self, images: dict[str, str] | None = None, pullable: dict[str, str] | None = None) -> None:
        self.images = _Images(self, dict(images or {}), dict(pullable or {}))
        self.containers = _Containers(self)
        self.system = _System()
        self.records: dict[str, dict[str, Any]] = {}  # by name
        self.calls: list[tuple[str, ...]] = []
        self.closed = False
        self.start_fails: dict[str, str] = {}  # name -> message
        self._ids = itertools.count(1)
        self.next_port = itertools.count(49000)

    async def close(self) -> None:
        self.closed = True

    def record(self, key: str) -> dict[str, Any]:
        for name, record in self.records.items():
            if key in (name, record["Id"]):
                return record
        raise DockerError(404, f"No such container: {key}")

    def die(self, name: str, code: int = 137) -> dict[str, Any]:
        """The container's process ends; returns the event Docker would send."""
        record = self.records[name]
        record["State"].update(Running=False, ExitCode=code)
        record["NetworkSettings"]["Ports"] = {}
        return {
            "Type": "container",
            "Action": "die",
            "Actor": {"ID": record["Id"], "Attributes": {"name": name, "exitCode": str(code)}},
            "timeNano": next(_clock),
        }


class _System:
    def __init__(self) -> None:
        self.fail: str | None = None

    async def info(self) -> dict[str, Any]:
        if self.fail:
            raise DockerError(900, self.fail)
        return {"ServerVersion": "fake", "SystemTime": _rfc3339(next(_clock))}


class _Images:
    def __init__(self, docker: FakeDocker, present: dict[str, str], pullable: dict[str, str]) -> None:
        self.docker, self.present, self.pullable = docker, present, pullable
        self.pulls: list[tuple[str, Any, Any]] = []

    async def inspect(self, name: str) -> dict[str, Any]:
        if name not in self.present:
            raise DockerError(404, f"No such image: {name}")
        return {"Id": self.present[name]}

    async def pull(self, name: str, auth: Any = None, tag: Any = None) -> list[Any]:
        self.pulls.append((name, auth, tag))
        short = name.removeprefix("docker.io/library/").removeprefix("docker.io/")
        if short not in self.pullable:
            raise DockerError(500, f"pull access denied for {short}, repository does not exist")
        self.present[short] = self.pullable[short]
        return []


class _Containers:
    def __init__(self, docker: FakeDocker) -> None:
        self.docker = docker

    async def create(self, body: dict[str, Any], name: str) -> _Handle:
        docker = self.docker
        docker.calls.append(("create", name))
        image_id = docker.images.present[body["Image"]]
        docker.records[name] = {
            "Id": f"c{next(docker._ids):063d}",
            "Name": "/" + name,
            "Image": image_id,
            "Config": {"Labels": dict(body["Labels"]), "Env": list(body["Env"]), "Image": body["Image"]},
            "HostConfig": body["HostConfig"],
            "State": {"Running": False, "ExitCode": 0, "StartedAt": "0001-01-01T00:00:00Z"},
            "NetworkSettings": {"Ports": {}},
        }
        return _Handle(docker, docker.records[name]["Id"])

    def container(self, key: str) -> _Handle:
        return _Handle(self.docker, key)


class _Handle:
    def __init__(self, docker: FakeDocker, key: str) -> None:
        self.docker, self.key = docker, key

    @property
    def id(self) -> str:
        return self.docker.record(self.key)["Id"]

    def _name(self, record: dict[str, Any]) -> str:
        return str(record["Name"]).lstrip("/")

    async def show(self) -> dict[str, Any]:
        return self.docker.record(self.key)

    async def start(self) -> None:
        record = self.docker.record(self.key)
        name = self._name(record)
        self.docker.calls.append(("start", name))
        if name in self.docker.start_fails:
            raise DockerError(500, self.docker.start_fails[name])
        record["State"].update(Running=True, StartedAt=_rfc3339(next(_clock)))
        bindings = record["HostConfig"].get("PortBindings")
        if bindings:
            wanted = bindings["3000/tcp"][0]["HostPort"]
            port = wanted or str(next(self.docker.next_port))
            record["NetworkSettings"]["Ports"] = {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]}

    async def stop(self, t: int | None = None) -> None:
        record = self.docker.record(self.key)
        self.docker.calls.append(("stop", self._name(record)))
        record["State"]["Running"] = False

    async def delete(self, force: bool = False) -> None:
        record = self.docker.record(self.key)
        self.docker.calls.append(("delete", self._name(record)))
        del self.docker.records[self._name(record)]

    async def log(self, **_: Any) -> list[str]:
        return ["Traceback (most recent call last):\n", "SystemExit: boom\n"]


def make_config(containers: list[dict[str, Any]], **docker: Any) -> Config:
    return parse_config(
        {
            "manage_containers": True,
            "docker": {"ready_timeout": 2, "start_wait": 5, **docker},
            "containers": containers,
        },
        environ={},
    )


HELLO = {"id": "hello", "image": "local/hello:latest", "description": "echo"}
IRIS = {"id": "iris", "image": "local/iris:latest"}
IMAGES = {"local/hello:latest": "sha256:" + "1" * 64, "local/iris:latest": "sha256:" + "2" * 64}


class Harness:
    def __init__(self, config: Config, docker: FakeDocker) -> None:
        self.docker = docker
        self.manager = DockerManager(config, session=None, docker_factory=lambda: docker)  # type: ignore[arg-type]

        async def answers(url: str) -> bool:
            # The service answers when a running container publishes that port.
            port = url.split(":")[-1].split("/")[0]
            return any(
                (
                    record["State"]["Running"]
                    and any(b["HostPort"] == port for b in (record["NetworkSettings"]["Ports"].get("3000/tcp") or []))
                )
                or (record["State"]["Running"] and record["Config"]["Labels"].get("io.infernet-node.host-port") == port)
                for record in docker.records.values()
            )

        async def no_events(since: str) -> None:
            await asyncio.Event().wait()

        self.manager._answers = answers  # type: ignore[method-assign]
        self.manager._watch_events = no_events  # type: ignore[method-assign]

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)


async def started(containers: list[dict[str, Any]], docker: FakeDocker | None = None, **options: Any) -> Harness:
    harness = Harness(make_config(containers, **options), docker or FakeDocker(IMAGES))
    await harness.manager.start()
    return harness


async def test_ready_containers_are_listed_exactly_as_the_contract_says() -> None:
    harness = await started([HELLO, IRIS])
    manager = harness.manager
    assert manager.running_info() == [
        {"id": "hello", "description": "echo", "external": True, "image": "local/hello:latest"},
        {"id": "iris", "description": "", "external": True, "image": "local/iris:latest"},
    ]
    endpoint = manager.endpoint("hello")
    assert endpoint is not None and endpoint.base_url.startswith("http://127.0.0.1:49")
    assert manager.unavailable_info() == []
    assert sorted(harness.docker.records) == ["infernet-hello", "infernet-iris"]
    await manager.close()


async def test_an_image_that_cannot_be_had_leaves_only_that_container_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = await started([HELLO, {"id": "ghost", "image": "nobody/ghost:1"}])
    manager = harness.manager
    assert [info["id"] for info in manager.running_info()] == ["hello"]
    assert manager.endpoint("ghost") is None
    reason = manager.unavailable_reason("ghost")
    assert "nobody/ghost:1" in reason and "could not be pulled" in reason and "pull access denied" in reason
    assert manager.unavailable_info() == [
        {"id": "ghost", "image": "nobody/ghost:1", "state": "failed", "reason": reason}
    ]
    assert "container ghost is unavailable" in caplog.text and "nobody/ghost:1" in caplog.text
    assert harness.docker.images.pulls == [("nobody/ghost:1", None, None)]
    await manager.close()


async def test_a_missing_image_is_pulled_with_credentials_that_never_reach_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    docker = FakeDocker(IMAGES, pullable={"acme/model": "sha256:" + "3" * 64})
    harness = await started(
        [{"id": "model", "image": "acme/model"}], docker, username="bob", password="s3cret-passw0rd"
    )
    assert harness.manager.endpoint("model") is not None
    assert docker.images.pulls == [
        ("docker.io/acme/model", {"username": "bob", "password": "s3cret-passw0rd"}, "latest")
    ]
    assert "s3cret-passw0rd" not in caplog.text
    await harness.manager.close()


async def test_a_dying_container_is_unavailable_at_once_then_restarted_and_ready_again() -> None:
    harness = await started([HELLO], max_restarts=3)
    manager, docker = harness.manager, harness.docker
    manager._on_event(docker.die("infernet-hello", 137))
    assert manager.endpoint("hello") is None  # no await in between: jobs fail fast from now on
    assert "exited with code 137" in manager.unavailable_reason("hello")
    assert manager.running_info() == []
    await harness.until(lambda: manager.endpoint("hello") is not None)
    assert docker.calls.count(("start", "infernet-hello")) == 2
    assert docker.calls.count(("create", "infernet-hello")) == 1
    await manager.close()


async def test_a_call_broken_by_a_dying_container_is_explained() -> None:
    harness = await started([HELLO], max_restarts=3)
    manager, docker = harness.manager, harness.docker
    assert await manager.explain_broken_call("hello", wait=0.05) is None  # alive: no explanation
    assert await manager.explain_broken_call("unknown") is None
    explained = asyncio.create_task(manager.explain_broken_call("hello", wait=2))
    await asyncio.sleep(0.01)  # the broken connection is seen before Docker's event
    manager._on_event(docker.die("infernet-hello", 137))
    reason = await explained
    assert reason is not None and reason.startswith("container exited with code 137")
    await manager.close()


async def test_restarts_are_bounded_and_the_reason_says_so(caplog: pytest.LogCaptureFixture) -> None:
    harness = await started([HELLO], max_restarts=1)
    manager, docker = harness.manager, harness.docker
    manager._on_event(docker.die("infernet-hello", 1))
    await harness.until(lambda: manager.endpoint("hello") is not None)
    manager._on_event(docker.die("infernet-hello", 1))
    await harness.until(lambda: manager.unavailable_info() and manager.unavailable_info()[0]["state"] == "failed")
    reason = manager.unavailable_reason("hello")
    assert "exited with code 1" in reason and "not restarted again" in reason and "max_restarts is 1" in reason
    assert "SystemExit: boom" in caplog.text  # the container's last output is in the log
    assert docker.calls.count(("start", "infernet-hello")) == 2
    await manager.close()


async def test_a_late_die_event_from_a_previous_run_is_ignored() -> None:
    harness = await started([HELLO])
    manager, docker = harness.manager, harness.docker
    stale = docker.die("infernet-hello")
    stale["timeNano"] = 1  # long before the current run started
    await docker.containers.container("infernet-hello").start()
    manager._on_event(stale)
    assert manager.endpoint("hello") is not None
    await manager.close()


async def test_events_about_other_containers_are_ignored() -> None:
    harness = await started([HELLO])
    harness.manager._on_event(
        {"Action": "die", "Actor": {"ID": "someone-else", "Attributes": {"name": "db"}}, "timeNano": next(_clock)}
    )
    assert harness.manager.endpoint("hello") is not None
    await harness.manager.close()


async def test_a_container_that_never_answers_is_stopped_and_given_up_on() -> None:
    docker = FakeDocker(IMAGES)
    harness = Harness(make_config([HELLO], max_restarts=0, ready_timeout=0.2), docker)

    async def never(url: str) -> bool:
        return False

    harness.manager._answers = never  # type: ignore[method-assign]
    await harness.manager.start()
    reason = harness.manager.unavailable_reason("hello")
    assert "did not answer GET /health within 0.2s" in reason
    assert ("stop", "infernet-hello") in docker.calls
    await harness.manager.close()


async def test_a_matching_running_container_is_reused_without_a_restart() -> None:
    docker = FakeDocker(IMAGES)
    first = await started([HELLO], docker)
    await first.manager.close()  # on_shutdown leave: still running
    assert docker.records["infernet-hello"]["State"]["Running"]
    container_id = docker.records["infernet-hello"]["Id"]
    docker.calls.clear()
    second = await started([HELLO], docker)
    assert second.manager.endpoint("hello") is not None
    assert docker.calls == []
    assert docker.records["infernet-hello"]["Id"] == container_id
    await second.manager.close()


async def test_a_changed_configuration_replaces_the_container() -> None:
    docker = FakeDocker(IMAGES)
    first = await started([HELLO], docker, on_shutdown="stop")
    await first.manager.close()
    docker.calls.clear()
    second = await started([{**HELLO, "env": {"MODE": "new"}}], docker)
    assert docker.calls[:3] == [("delete", "infernet-hello"), ("create", "infernet-hello"), ("start", "infernet-hello")]
    assert "MODE=new" in docker.records["infernet-hello"]["Config"]["Env"]
    await second.manager.close()


async def test_a_container_we_did_not_create_is_never_touched() -> None:
    docker = FakeDocker(IMAGES)
    docker.records["infernet-hello"] = {
        "Id": "f" * 64,
        "Name": "/infernet-hello",
        "Image": "sha256:" + "9" * 64,
        "Config": {"Labels": {}},
        "State": {"Running": True},
        "NetworkSettings": {"Ports": {}},
    }
    harness = await started([HELLO, IRIS], docker)
    assert "did not create" in harness.manager.unavailable_reason("hello")
    assert harness.manager.endpoint("iris") is not None
    assert ("delete", "infernet-hello") not in docker.calls
    await harness.manager.close()
    assert "infernet-hello" in docker.records


async def test_docker_refusing_to_start_is_retried_then_reported() -> None:
    docker = FakeDocker(IMAGES)
    docker.start_fails["infernet-hello"] = "Bind for 127.0.0.1:3000 failed: port is already allocated"
    harness = await started([{**HELLO, "port": 3000}, IRIS], docker, max_restarts=1)
    reason = harness.manager.unavailable_reason("hello")
    assert "port is already allocated" in reason and "not restarted again" in reason
    assert harness.manager.endpoint("iris") is not None
    await harness.manager.close()


async def test_no_daemon_does_not_hold_the_node_up(caplog: pytest.LogCaptureFixture) -> None:
    docker = FakeDocker(IMAGES)
    docker.system.fail = "Cannot connect to Docker Engine via unix:///var/run/docker.sock"
    harness = Harness(make_config([HELLO], start_wait=30), docker)
    async with asyncio.timeout(2):
        await harness.manager.start()
    assert "Docker daemon does not answer" in harness.manager.unavailable_reason("hello")
    assert harness.manager.running_info() == []
    await harness.manager.close()


async def test_containers_with_a_url_are_not_managed() -> None:
    harness = await started([HELLO, {"id": "remote", "url": "http://127.0.0.1:9999"}])
    assert harness.manager.endpoint("remote").base_url == "http://127.0.0.1:9999"  # type: ignore[union-attr]
    assert [info["id"] for info in harness.manager.running_info()] == ["hello", "remote"]
    assert "infernet-remote" not in harness.docker.records
    await harness.manager.close()


@pytest.mark.parametrize(
    ("on_shutdown", "calls", "left"),
    [
        ("leave", [], True),
        ("stop", [("stop", "infernet-hello")], True),
        ("remove", [("stop", "infernet-hello"), ("delete", "infernet-hello")], False),
    ],
)
async def test_shutdown_policy(on_shutdown: str, calls: list[tuple[str, str]], left: bool) -> None:
    harness = await started([HELLO], on_shutdown=on_shutdown)
    harness.docker.calls.clear()
    await harness.manager.close()
    assert harness.docker.calls == calls
    assert ("infernet-hello" in harness.docker.records) is left
    assert harness.docker.closed
    assert harness.manager.endpoint("hello") is None


async def test_host_mode_gives_each_service_its_own_port() -> None:
    harness = await started([HELLO, IRIS], network_mode="host")
    ports = {harness.manager.endpoint(name).base_url for name in ("hello", "iris")}  # type: ignore[union-attr]
    assert len(ports) == 2
    for record in harness.docker.records.values():
        assert record["HostConfig"]["NetworkMode"] == "host"
        assert record["Config"]["Labels"][LABEL_MANAGED] == "true"
    await harness.manager.close()


async def test_a_docker_error_quoting_a_secret_reaches_no_client() -> None:
    # The reason is shown in /info and in the error of every job sent to the container.
    class Leaky(FakeDocker):
        def __init__(self) -> None:
            super().__init__(IMAGES)

            async def pull(name: str, auth: Any = None, tag: Any = None) -> list[Any]:
                raise DockerError(401, f"login with {auth['password']} refused")

            self.images.pull = pull  # type: ignore[method-assign]

    redact.add(["s3cret-passw0rd"])
    try:
        harness = await started(
            [{"id": "model", "image": "acme/model"}], Leaky(), username="bob", password="s3cret-passw0rd"
        )
        [info] = harness.manager.unavailable_info()
        assert "refused" in info["reason"] and "s3cret-passw0rd" not in info["reason"]
        assert "s3cret-passw0rd" not in harness.manager.unavailable_reason("model")
        await harness.manager.close()
    finally:
        redact.clear()
