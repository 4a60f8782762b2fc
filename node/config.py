"""The node's configuration: one pydantic model tree for `config.json`.

A file written for Ritual's reference node 1.4.0 loads unchanged. Keys that only
mean something to the reference (`redis`, `forward_stats`, `startup_wait`) are
accepted and reported as ignored; any other unknown key is an error, so that a
typo never silently turns an option off.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# Keys of the reference node that this node accepts and ignores.
IGNORED_TOP_LEVEL_KEYS = ("redis", "forward_stats", "startup_wait")
DEFAULT_STORE_URL = "sqlite+aiosqlite:///data/node.db"
MiB = 1024 * 1024


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the field."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_networks(value: Any) -> Any:
    """CIDRs (or bare addresses) become network objects here, once, at load."""
    if not isinstance(value, list | tuple):
        return value  # pydantic names the type error
    networks: list[Any] = []
    for item in value:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not an IP address or CIDR network")
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


# A list of networks in the file; parsed network objects in the model.
Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(_parse_networks)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogConfig(_Model):
    path: str | None = "data/infernet_node.log"
    max_file_size: int = Field(default=2**30, gt=0)
    backup_count: int = Field(default=2, ge=0)
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class RateLimitConfig(_Model):
    # Reference defaults: 60 requests per 60 s, per client IP and endpoint.
    # num_requests 0 turns the limit off.
    num_requests: int = Field(default=60, ge=0)
    period: float = Field(default=60.0, gt=0)


class ServerConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(default=4000, ge=1, le=65535)
    rate_limit: RateLimitConfig = RateLimitConfig()
    trusted_proxies: Networks = ()
    # Who may call PUT /api/status.
    status_allowed_networks: Networks = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    max_body_bytes: int = Field(default=16 * MiB, gt=0)
    # A request's head must arrive within this of the connection opening (or of the
    # previous response), and its body must not go this long without a byte.
    # Idle keep-alive connections close after it too.
    read_timeout: float = Field(default=30.0, gt=0)
    # Longest request line (method, path and query): GET /api/jobs with the ids of a
    # 1,000-job batch is about 40 KB.
    max_url_bytes: int = Field(default=64 * 1024, ge=1024)
    # Open connections, in all and per client IP (the peer; trusted proxies are exempt).
    max_connections: int = Field(default=4096, ge=1)
    max_connections_per_ip: int = Field(default=256, ge=1)
    # Keep the event loop and the SQLite store's threads on one CPU (moved when another CPU is
    # markedly idler): a wake-up between them then costs a context switch, not an interrupt to an
    # idle CPU (node/thread_placement.py). No effect with a SQL server store or one allowed CPU.
    colocate_threads: bool = True


class StoreConfig(_Model):
    url: str = DEFAULT_STORE_URL
    # None keeps finished jobs forever.
    retention_seconds: float | None = Field(default=None, gt=0)
    prune_interval_seconds: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _dialect(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (an async driver)")
        return value


class ClusterConfig(_Model):
    """Several nodes on one store: who they are and how fast a dead one is replaced."""

    # Names this node in the leases table, /info and logs; by default host-pid-random.
    node_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    # A lease (chain sender, heartbeat) not renewed for this long passes to another node.
    lease_seconds: float = Field(default=5.0, gt=0)
    # How often a node renews its leases; must be well under lease_seconds.
    renew_seconds: float = Field(default=1.5, gt=0)

    @model_validator(mode="after")
    def _renew_under_lease(self) -> ClusterConfig:
        if self.renew_seconds * 2 > self.lease_seconds:
            raise ValueError("renew_seconds must be at most half of lease_seconds")
        return self


class JobsConfig(_Model):
    workers: int = Field(default=32, ge=1, le=4096)
    queue_size: int = Field(default=10_000, ge=1)
    # Queued jobs per container (first container of the chain); None = only the global bound.
    per_container_queue_size: int | None = Field(default=None, ge=1)
    container_timeout: float = Field(default=180.0, gt=0)
    stream_timeout: float = Field(default=60.0, gt=0)
    # Bounds on what one service may hand the node: a job's answer (bytes read
    # from the service), and a stream's whole output (bytes and seconds).
    max_result_bytes: int = Field(default=16 * MiB, gt=0)
    max_stream_bytes: int = Field(default=16 * MiB, gt=0)
    max_stream_seconds: float = Field(default=600.0, gt=0)
    # Containers in one job's chain: one request must not make thousands of service calls.
    max_chain_length: int = Field(default=16, ge=1)
    resources_timeout: float = Field(default=0.8, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)


# The order of secp256k1: a private key is a number in [1, order - 1].
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class WalletConfig(_Model):
    max_gas_limit: int = Field(default=5_000_000, gt=0)
    private_key: SecretStr | None = None
    payment_address: str | None = None
    allowed_sim_errors: tuple[str, ...] = ()

    @field_validator("private_key")
    @classmethod
    def _valid_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here, so a bad key stops the node at start with the field's name.
        # The messages never quote the value: it is a secret.
        if value is None or not value.get_secret_value():
            return value
        digits = value.get_secret_value().strip()
        digits = digits[2:] if digits[:2] in ("0x", "0X") else digits
        if len(digits) != 64 or any(char not in "0123456789abcdefABCDEF" for char in digits):
            raise ValueError("not a private key: expected 32 bytes as 64 hex digits, with or without 0x")
        if not 0 < int(digits, 16) < _SECP256K1_ORDER:
            raise ValueError("not a private key: outside the range of secp256k1 keys")
        return value


class SnapshotSyncConfig(_Model):
    sleep: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=200, ge=1)
    starting_sub_id: int = Field(default=0, ge=0)
    sync_period: float = Field(default=0.5, gt=0)


class ChainConfig(_Model):
    enabled: bool = False
    rpc_url: str | None = None
    trail_head_blocks: int = Field(default=1, ge=0)
    registry_address: str | None = None
    wallet: WalletConfig = WalletConfig()
    snapshot_sync: SnapshotSyncConfig = SnapshotSyncConfig()

    @model_validator(mode="after")
    def _required_when_enabled(self) -> ChainConfig:
        if self.enabled:
            missing = [
                name
                for name, value in (
                    ("rpc_url", self.rpc_url),
                    ("registry_address", self.registry_address),
                    ("wallet.private_key", self.wallet.private_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"chain is enabled but {', '.join(missing)} is not set")
        return self


class DockerConfig(_Model):
    """How the node runs its containers when `manage_containers` is true (node/services/docker_manager.py)."""

    username: str | None = None
    password: SecretStr | None = None
    network_mode: Literal["bridge", "host"] = "bridge"
    on_shutdown: Literal["leave", "stop", "remove"] = "leave"
    max_restarts: int = Field(default=5, ge=0)
    ready_timeout: float = Field(default=60.0, gt=0)
    # Docker names the containers <prefix><id>; only containers this node labelled are touched.
    container_prefix: str = Field(default="infernet-", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Host address that bridge-mode ports are published on (0.0.0.0 exposes them to the network).
    bind_host: str = "127.0.0.1"
    # Seconds allowed for pulling one missing image.
    pull_timeout: float = Field(default=600.0, gt=0)
    # Seconds the node waits at start for its containers to be ready before it serves jobs;
    # those still starting after that keep starting in the background.
    start_wait: float = Field(default=180.0, ge=0)
    # Seconds a container gets to exit after SIGTERM (on_shutdown stop/remove, and restarts).
    stop_timeout: int = Field(default=10, ge=0)

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        return value


class ContainerConfig(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    image: str = ""
    url: str | None = None
    bearer: SecretStr | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    external: bool = True
    gpu: bool = False
    description: str = ""
    command: str = ""
    env: dict[str, str] = {}
    volumes: tuple[str, ...] = ()
    allowed_ips: Networks = ()
    allowed_addresses: tuple[str, ...] = ()
    allowed_delegate_addresses: tuple[str, ...] = ()
    accepted_payments: dict[str, int] = {}
    generates_proofs: bool = False
    # Ours: per-container override of jobs.container_timeout.
    timeout: float | None = Field(default=None, gt=0)
    # Ours: the model names this container serves on /v1 (OpenAI's `model`); None means its id.
    models: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] | None = None
    # Ours: several nodes on PostgreSQL: a job interrupted by its node's death runs again on
    # another node (rather than ending failed); only for services that may safely run twice.
    retry_interrupted: bool = False

    @property
    def served_models(self) -> tuple[str, ...]:
        return self.models if self.models is not None else (self.id,)

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, value: Any) -> Any:
        # The reference accepts numbers in env; Docker wants strings.
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


class LimitsConfig(_Model):
    """Per-caller limits; None = no limit."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    token_budget: int | None = Field(default=None, ge=1)


def _check_gonka_address(value: str) -> str:
    from node.auth.bech32 import is_valid  # a pure module: no framework, no I/O

    if not is_valid(value):
        raise ValueError(f"{value!r} is not a gonka bech32 address (gonka1…)")
    return value


class GonkaConfig(_Model):
    """Signed requests in the Gonka network's scheme (docs/inference-apis.md §3)."""

    # This node's own (transfer) address: a request signed for another one is refused.
    address: str | None = None
    # Only these requester addresses may call; empty = any address with a valid signature.
    allowed_addresses: tuple[str, ...] = ()
    max_age_seconds: float = Field(default=60.0, gt=0)
    max_ahead_seconds: float = Field(default=30.0, ge=0)
    # v0 signs the body alone (no timestamp): replayable once out of the replay window.
    allow_v0: bool = False
    # Limits for every signing address.
    limits: LimitsConfig = LimitsConfig()

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _check_gonka_address(value)

    @field_validator("allowed_addresses")
    @classmethod
    def _allowed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _check_gonka_address(item)
        return value


class AuthConfig(_Model):
    """Who may call. `v1`: none (loopback callers only), keys, signatures or either.
    `api` (the Infernet REST API): open (as the client contract says) or keys."""

    v1: Literal["none", "keys", "signatures", "either"] = "none"
    api: Literal["open", "keys"] = "open"
    # The header that must carry a key's workspace (for keys created with --workspace).
    workspace_header: str = Field(default="x-deci-workspace", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")
    gonka: GonkaConfig = GonkaConfig()
    # How often used signatures are deleted once stale.
    prune_interval_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _address_for_signatures(self) -> AuthConfig:
        if self.v1 in ("signatures", "either") and self.gonka.address is None:
            raise ValueError(f"auth.v1 is {self.v1!r} but auth.gonka.address (this node's gonka address) is not set")
        return self


class Config(_Model):
    log: LogConfig = LogConfig()
    manage_containers: bool = False
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    cluster: ClusterConfig = ClusterConfig()
    jobs: JobsConfig = JobsConfig()
    chain: ChainConfig = ChainConfig()
    docker: DockerConfig = DockerConfig()
    containers: tuple[ContainerConfig, ...] = ()
    auth: AuthConfig = AuthConfig()
    # Filled by the loader, not by the file.
    ignored_keys: tuple[str, ...] = Field(default=(), exclude=True)

    @model_validator(mode="after")
    def _containers_reachable(self) -> Config:
        seen: set[str] = set()
        served: dict[str, int] = {}
        for index, container in enumerate(self.containers):
            if container.id in seen:
                raise ValueError(f"containers[{index}].id {container.id!r} is used twice")
            seen.add(container.id)
            for model in container.served_models:
                if served.get(model, index) != index:
                    raise ValueError(
                        f"containers[{index}].models: model {model!r} is already served by "
                        f"containers[{served[model]}] ({self.containers[served[model]].id}); "
                        "a model name must select one container"
                    )
                served[model] = index
            if not self.manage_containers and not (container.url or container.port):
                raise ValueError(
                    f"containers[{index}] ({container.id}): set `url` or `port` "
                    "(manage_containers is false, so the node does not start it)"
                )
            if self.manage_containers and not container.url and not container.image:
                raise ValueError(f"containers[{index}] ({container.id}): `image` is required")
        return self

    def models(self) -> dict[str, str]:
        """Model name -> the id of the container that serves it (/v1's `model`).

        External containers only: a call is a job whose first container is the model's,
        and an internal one may only follow another (the guardian's rule).
        """
        return {
            model: container.id
            for container in self.containers
            if container.external
            for model in container.served_models
        }

    def container(self, container_id: str) -> ContainerConfig | None:
        for container in self.containers:
            if container.id == container_id:
                return container
        return None


# Secrets that may come from the environment instead of the file.
_SECRET_ENV = {
    "INFERNET_WALLET_PRIVATE_KEY": ("chain", "wallet", "private_key"),
    "INFERNET_DOCKER_PASSWORD": ("docker", "password"),
    "INFERNET_DOCKER_USERNAME": ("docker", "username"),
}


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[tuple[str, ...], str]:
    """Put the secrets found in the environment into `raw`; returns field path -> variable name."""
    applied: dict[tuple[str, ...], str] = {}
    for var, path in _SECRET_ENV.items():
        value = environ.get(var)
        if not value:
            continue
        applied[path] = var
        node = raw
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[path[-1]] = value
    return applied


def field_path(loc: tuple[int | str, ...]) -> str:
    """A field's path as a reader writes it: `containers[1].timeout`, `server.rate_limit.period`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: ValidationError, from_env: dict[tuple[str, ...], str] | None = None) -> str:
    lines = []
    for item in error.errors():
        variable = (from_env or {}).get(tuple(str(part) for part in item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        where = field_path(item["loc"])
        if variable:
            where += f" (from {variable})"
        # A check across fields has no location of its own; its message names the fields.
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def parse_config(raw: Any, environ: dict[str, str] | None = None) -> Config:
    """Build a Config from decoded JSON, or raise ConfigError naming the bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a JSON object")
    raw = json.loads(json.dumps(raw))  # a private deep copy we may edit
    ignored = [key for key in IGNORED_TOP_LEVEL_KEYS if key in raw]
    for key in ignored:
        raw.pop(key)
    # Old reference configs put the log file at the top level.
    if "log_path" in raw:
        log = raw.setdefault("log", {})
        if isinstance(log, dict):
            log.setdefault("path", raw.pop("log_path"))
        ignored.append("log_path (read as log.path)")
    from_env = _apply_env(raw, dict(os.environ) if environ is None else environ)
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, from_env)) from None
    return config.model_copy(update={"ignored_keys": tuple(ignored)})


def describe_json_error(error: json.JSONDecodeError) -> str:
    """Where the JSON is broken, with the line and a caret under the place to fix.

    JSON reports a missing comma at the start of the next value, often on the next
    line; the comma belongs right after the previous value, so point there. A
    trailing comma is reported at the `}` or `]` after it; point at the comma.
    """
    text, pos, message = error.doc, error.pos, error.msg.removesuffix(" at")
    if not text.strip():
        return "the file is empty (it must hold one JSON object, e.g. {})"
    before = len(text[:pos].rstrip())  # just past the last non-blank character before pos
    if message == "Expecting ',' delimiter" and before > 0:
        pos, message = before, "a ',' is missing after this value"
    elif (
        message in ("Expecting property name enclosed in double quotes", "Expecting value")
        and before > 0
        and text[before - 1] == ","
        and text[pos : pos + 1] in ("}", "]")
    ):
        pos, message = before - 1, "a trailing ',' (JSON allows none before '}' or ']')"
    line_number = text.count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : len(text) if line_end < 0 else line_end].rstrip("\r")
    column = pos - line_start  # 0-based
    return f"invalid JSON at line {line_number} column {column + 1}: {message}\n" + _caret_excerpt(
        line_number, line, column
    )


def _caret_excerpt(line_number: int, line: str, column: int, width: int = 100) -> str:
    """`  12 | <the line>` and a caret under `column`; a long line is cut around the column."""
    prefix, shown = line[:column].expandtabs(), line.expandtabs()
    caret_at = len(prefix)
    if len(shown) > width:
        start = max(0, caret_at - width // 2)
        cut = shown[start : start + width]
        lead = "..." if start > 0 else ""
        shown = lead + cut + ("..." if start + width < len(line.expandtabs()) else "")
        caret_at = caret_at - start + len(lead)
    gutter = f"{line_number:>5} | "
    return f"{gutter}{shown}\n{' ' * (len(gutter) - 2)}| {' ' * caret_at}^"


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: {describe_json_error(error)}") from None
    try:
        return parse_config(raw, environ)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def default_config_path(environ: dict[str, str] | None = None) -> str:
    environ = dict(os.environ) if environ is None else environ
    return environ.get("INFERNET_CONFIG_PATH", "config.json")
