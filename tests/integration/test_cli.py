"""`infernet-node run` as a real process: what it logs when it starts serving and when it stops.

An operator reads these lines to know when the node can be used, what it serves, and what a
Ctrl-C or SIGTERM is waiting for.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.faults.httpcalls import call
from tests.support.processes import NodeProcess, node_config, service_process

pytestmark = pytest.mark.slow


def test_listening_is_logged_once_the_socket_accepts_and_names_the_containers(tmp_path: Path) -> None:
    with service_process("hello-world") as url:
        _listening_is_logged_once_the_socket_accepts(tmp_path, url)


def _listening_is_logged_once_the_socket_accepts(tmp_path: Path, echo_url: str) -> None:
    config = node_config(tmp_path, [{"id": "echo", "url": echo_url}, {"id": "other", "url": echo_url}])
    node = NodeProcess(config, tmp_path).launch()
    try:
        line = node.wait_for_log("listening on")
        # The moment the line is there, the port accepts: no retry, no sleep.
        with socket.create_connection(("127.0.0.1", config["server"]["port"]), timeout=1):
            pass
        assert f"listening on 127.0.0.1:{config['server']['port']}" in line
        assert "2 containers (echo, other), not managed: reached at their url or port" in line
        assert "Ctrl-C or SIGTERM stops it" in line
        lines = node.log_text().splitlines()
        # After the store is migrated, not before (the old line came first of all).
        assert lines.index(line) > max(i for i, text in enumerate(lines) if "Running upgrade" in text)
        assert "starting with" in lines[0]
    finally:
        assert node.stop() == 0, node.log_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_is_logged_with_what_is_drained_and_the_end(tmp_path: Path, signum: signal.Signals) -> None:
    grace = 3.0
    with service_process("slow") as slow_url:
        config = node_config(
            tmp_path, [{"id": "slow", "url": slow_url}], jobs={"workers": 1, "shutdown_grace_seconds": grace}
        )
        node = NodeProcess(config, tmp_path).start()
        for sleep in (60, 0):  # one running (it overruns the grace), one queued behind it
            status, _, body = call(f"{node.url}/api/jobs", "POST", {"containers": ["slow"], "data": {"sleep": sleep}})
            assert status == 200, body
        time.sleep(0.3)
        assert node.process is not None
        node.process.send_signal(signum)
        node.wait_for_log("received: stopping")
        time.sleep(0.5)
        node.process.send_signal(signum)  # a second one: said to change nothing
        assert node.process.wait(grace + 20) == 0, node.log_text()

    log = node.log_text()
    name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else "SIGTERM"
    assert f"{name} received: stopping" in log
    assert (
        "no new connections; waiting up to 3.0s (jobs.shutdown_grace_seconds) for 1 running job (streams included); "
        "any still running then are recorded as failed; 1 queued job stays queued for the next start"
    ) in log
    again = _line(log, f"{name} received again: already stopping: waiting up to ")
    assert "for 1 running job " in again and "SIGKILL stops at once" in again
    end = _line(log, "infernet-node stopped: shutdown took ")
    took = float(end.rsplit("took ", 1)[1].rstrip("s"))
    assert grace - 0.5 < took < grace + 10, end  # it waited out the grace for the 60 s job, no longer
    assert log.splitlines()[-1] == end  # the last word


def _line(log: str, text: str) -> str:
    found = [line for line in log.splitlines() if text in line]
    assert found, f"no {text!r} in the log:\n{log}"
    return found[0]
