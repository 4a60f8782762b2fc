"""`infernet-node run | check-config | keys | usage`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable

from node import __version__
from node.config import Config, ConfigError, default_config_path, load_config

log = logging.getLogger("node")


def _load(path: str | None) -> Config | None:
    path = path or default_config_path()
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"infernet-node: bad configuration: {error}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from node.api.server import serve
    from node.app import StartupError, build_app, container_summary, shutdown_progress
    from node.logs import setup_logging, stop_logging

    setup_logging(config.log)
    for key in config.ignored_keys:
        log.warning("config: %s is not used by this node and was ignored", key)
    if config.manage_containers and config.containers:
        log.info(
            "infernet-node %s starting with %s: the store, then %d containers; it serves once they are up "
            "(at most %gs: docker.start_wait)",
            __version__,
            args.config or default_config_path(),
            len(config.containers),
            config.docker.start_wait,
        )
    else:
        log.info("infernet-node %s starting with %s", __version__, args.config or default_config_path())
    app = build_app(config)
    tune_gc()
    signals = StopSignals(lambda elapsed: shutdown_progress(app, elapsed))

    def listening() -> None:
        # Called once the socket accepts: after migrations and container start-up.
        signals.serving = True
        log.info(
            "infernet-node %s listening on %s:%d; %s (Ctrl-C or SIGTERM stops it)",
            __version__,
            config.server.host,
            config.server.port,
            container_summary(app),
        )

    # In-flight requests (streams are running jobs too) get the same grace as
    # queued jobs, counted from the signal for both (app.py, on_shutdown).
    # Halved: aiohttp waits for a busy handler twice this long before it
    # cancels it (once for it to finish, once more after cancelling its body).
    shutdown_timeout = max(0.5, config.jobs.shutdown_grace_seconds / 2)

    async def serve_until_stopped() -> None:
        signals.install(asyncio.get_running_loop())
        serving = asyncio.create_task(
            serve(app, config.server, shutdown_timeout, stop=signals.stopping, listening=listening)
        )
        stopped = asyncio.create_task(signals.stopping.wait())
        await asyncio.wait((serving, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not serving.done() and not signals.serving:
            # A signal during start-up (containers may take minutes): abandon it rather
            # than finish starting only to stop. Nothing was accepted yet, so nothing is lost.
            log.info("stopping during start-up: not waiting for the containers")
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            return
        await serving

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve_until_stopped())
    except StartupError as error:
        print(f"infernet-node: cannot start: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        log.error("cannot listen on %s:%d: %s", config.server.host, config.server.port, error.strerror)
        return 1
    else:
        log.info("infernet-node stopped%s", signals.took())
    finally:
        # A thread writes the log lines: write out what is still queued now that the app
        # has stopped (an exception before serving is covered by node.logs' atexit hook).
        stop_logging()
    return 0


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM stop the node gracefully; each is logged by name, and a
    repeated one says how far the drain is instead of stopping anything harder."""

    def __init__(self, progress: Callable[[float], str]) -> None:
        self._progress = progress  # how far the drain is, given the seconds since the signal
        self._since: float | None = None
        self.stopping = asyncio.Event()
        self.serving = False  # set once the socket accepts

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            # Not on Windows: there KeyboardInterrupt still stops it.
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(number, self._received, number)

    def _received(self, number: int) -> None:
        name = signal.Signals(number).name + (" (Ctrl-C)" if number == signal.SIGINT else "")
        if self._since is None:
            self._since = time.monotonic()
            log.info("%s received: stopping", name)
            self.stopping.set()
            return
        log.info(
            "%s received again: already stopping: %s. SIGKILL stops at once, and nothing acknowledged is lost",
            name,
            self._progress(time.monotonic() - self._since),
        )

    def took(self) -> str:
        return "" if self._since is None else f": shutdown took {time.monotonic() - self._since:.1f}s"


def tune_gc() -> None:
    """The startup heap (~100k objects: pydantic, web3, SQLAlchemy) never becomes garbage,
    so keep it out of every full collection; and collect young objects less often. Under
    a load that queues jobs (the heap grows), this took the collector from ~8% of the
    node's time to ~1.5%, and its pauses from ~120 ms to ~40 ms (bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed (a dependency on Linux and macOS): less CPU per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    for key in config.ignored_keys:
        print(f"note: {key} is not used by this node and is ignored")
    print(f"configuration OK: {len(config.containers)} containers, store {config.store.url.split('://')[0]}")
    return 0


def _store_command(args: argparse.Namespace) -> int:
    """keys/usage: the auth commands (node/cli_auth.py) against the configured store."""
    from node.cli_auth import UsageError
    from node.store.engine import StoreUnusable

    config = _load(args.config)
    if config is None:
        return 2
    try:
        return int(args.command_handler(config, args))
    except UsageError as error:
        print(f"infernet-node: {error}", file=sys.stderr)
        return 2
    except StoreUnusable as error:
        print(f"infernet-node: {error}", file=sys.stderr)
        return 1


def _config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", help="path to config.json (default ./config.json or $INFERNET_CONFIG_PATH)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infernet-node", description="An Infernet-compatible node server.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, help_text in (
        ("run", _run, "run the node"),
        ("check-config", _check, "validate the configuration and exit"),
    ):
        command = commands.add_parser(name, help=help_text)
        _config_option(command)
        command.set_defaults(handler=handler)
    from node.cli_auth import add_commands

    add_commands(commands, _config_option)
    args = parser.parse_args(argv)
    if args.command in ("keys", "usage"):
        args.command_handler = args.handler
        return _store_command(args)
    return int(args.handler(args))
