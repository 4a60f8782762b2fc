import json
from pathlib import Path

import pytest

from node.config import ConfigError, load_config, parse_config

# A config.json written for the reference node 1.4.0 (its sample, with values filled in).
REFERENCE_CONFIG = {
    "log": {"path": "infernet_node.log", "max_file_size": 1000000000, "backup_count": 2},
    "manage_containers": True,
    "server": {"port": 4000, "rate_limit": {"num_requests": 100, "period": 100}},
    "chain": {
        "enabled": True,
        "trail_head_blocks": 5,
        "rpc_url": "http://host.docker.internal:8545",
        "registry_address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "wallet": {
            "max_gas_limit": 5000000,
            "private_key": "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
            "payment_address": "0x0000000000000000000000000000000000000000",
            "allowed_sim_errors": ["not enough balance"],
        },
        "snapshot_sync": {"sleep": 1.5, "batch_size": 200, "starting_sub_id": 0, "sync_period": 0.5},
    },
    "startup_wait": 1.0,
    "docker": {"username": "username", "password": "password"},
    "redis": {"host": "redis", "port": 6379},
    "forward_stats": True,
    "containers": [
        {
            "id": "hello-world",
            "image": "ritualnetwork/hello-world-infernet:latest",
            "external": True,
            "port": "3000",
            "allowed_delegate_addresses": [],
            "allowed_addresses": [],
            "allowed_ips": [],
            "command": "--bind=0.0.0.0:3000 --workers=2",
            "env": {"THREADS": 4},
            "volumes": [],
            "accepted_payments": {"0x0000000000000000000000000000000000000000": "1000"},
            "generates_proofs": False,
        }
    ],
}


def test_reference_config_loads_unchanged_and_reports_ignored_keys() -> None:
    config = parse_config(REFERENCE_CONFIG, environ={})
    assert set(config.ignored_keys) == {"redis", "forward_stats", "startup_wait"}
    container = config.containers[0]
    assert container.port == 3000
    assert container.env == {"THREADS": "4"}
    assert container.accepted_payments == {"0x0000000000000000000000000000000000000000": 1000}
    assert config.chain.snapshot_sync.batch_size == 200
    # Defaults of our own fields.
    assert config.server.host == "0.0.0.0"
    assert config.server.max_body_bytes == 16 * 1024 * 1024
    assert config.store.url.startswith("sqlite+aiosqlite://")


def test_secrets_never_show_in_repr() -> None:
    config = parse_config(REFERENCE_CONFIG, environ={})
    text = repr(config) + str(config.model_dump())
    assert "59c6995e" not in text
    assert "password'" not in text.replace("'password': SecretStr", "")


def test_secrets_may_come_from_the_environment() -> None:
    raw = json.loads(json.dumps(REFERENCE_CONFIG))
    del raw["chain"]["wallet"]["private_key"]
    with pytest.raises(ConfigError, match=r"wallet\.private_key"):
        parse_config(raw, environ={})
    key = "0x" + "ab" * 32
    config = parse_config(raw, environ={"INFERNET_WALLET_PRIVATE_KEY": key, "INFERNET_DOCKER_PASSWORD": "pw"})
    assert config.chain.wallet.private_key is not None
    assert config.chain.wallet.private_key.get_secret_value() == key
    assert config.docker.password is not None and config.docker.password.get_secret_value() == "pw"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"server": {"port": "eighty"}}, "server.port: Input should be a valid integer"),
        ({"server": {"port": 70000}}, "server.port: Input should be less than or equal to 65535"),
        ({"server": {"prot": 1}}, "server.prot: unknown field"),
        ({"server": {"read_timeout": 0}}, "server.read_timeout: Input should be greater than 0"),
        ({"server": {"max_url_bytes": 100}}, "server.max_url_bytes: Input should be greater than or equal to 1024"),
        ({"server": {"max_connections": 0}}, "server.max_connections: Input should be greater than or equal to 1"),
        ({"server": {"max_connections_per_ip": -1}}, "server.max_connections_per_ip: Input should be greater"),
        ({"containers": [{"id": "a"}]}, "containers[0] (a): set `url` or `port`"),
        ({"containers": [{"id": "a", "port": 1}, {"id": "a", "port": 2}]}, "'a' is used twice"),
        (
            {"containers": [{"id": "a", "port": 1, "allowed_ips": ["nope"]}]},
            "containers[0].allowed_ips: 'nope' is not an IP",
        ),
        (
            {"containers": [{"id": "a", "port": 1, "volumes": ["/x", 2]}]},
            "containers[0].volumes[1]: Input should be a valid string",
        ),
        (
            {"containers": [{"id": "a", "port": 1, "accepted_payments": {"0x1": "x"}}]},
            "containers[0].accepted_payments.0x1: Input",
        ),
        ({"store": {"url": "sqlite:///x.db"}}, "store.url: must start with sqlite+aiosqlite://"),
        (
            {"chain": {"enabled": True}},
            "chain: chain is enabled but rpc_url, registry_address, wallet.private_key is not set",
        ),
        ({"jobs": {"workers": 0}}, "jobs.workers: Input should be greater than or equal to 1"),
        (
            {"cluster": {"lease_seconds": 2, "renew_seconds": 1.5}},
            "cluster: renew_seconds must be at most half of lease_seconds",
        ),
        ({"cluster": {"node_id": "a b"}}, "cluster.node_id: String should match pattern"),
    ],
)
def test_bad_fields_are_named(patch: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(patch, environ={})
    assert expected in str(caught.value)


def test_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"server": {"port": 4000,}}')
    with pytest.raises(ConfigError, match=r"invalid JSON at line 1 column 25: a trailing ','"):
        load_config(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_config(listed)


def test_old_log_path_key_is_read_as_log_path() -> None:
    config = parse_config({"log_path": "old.log"}, environ={})
    assert config.log.path == "old.log"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("0xabc", "expected 32 bytes as 64 hex digits"),
        ("0x" + "zz" * 32, "expected 32 bytes as 64 hex digits"),
        ("ab" * 33, "expected 32 bytes as 64 hex digits"),
        ("0x" + "00" * 32, "outside the range of secp256k1 keys"),
        ("0x" + "ff" * 32, "outside the range of secp256k1 keys"),
    ],
)
def test_an_invalid_wallet_key_names_the_field_and_never_the_key(key: str, problem: str) -> None:
    raw = json.loads(json.dumps(REFERENCE_CONFIG))
    raw["chain"]["wallet"]["private_key"] = key
    with pytest.raises(ConfigError) as in_file:
        parse_config(raw, environ={})
    assert str(in_file.value).startswith(f"chain.wallet.private_key: not a private key: {problem}")
    del raw["chain"]["wallet"]["private_key"]
    with pytest.raises(ConfigError) as from_env:
        parse_config(raw, environ={"INFERNET_WALLET_PRIVATE_KEY": key})
    message = str(from_env.value)
    assert message.startswith("chain.wallet.private_key (from INFERNET_WALLET_PRIVATE_KEY): not a private key")
    assert key.removeprefix("0x") not in message


def test_a_wallet_key_without_0x_is_accepted() -> None:
    raw = json.loads(json.dumps(REFERENCE_CONFIG))
    raw["chain"]["wallet"]["private_key"] = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
    assert parse_config(raw, environ={}).chain.wallet.private_key is not None


def test_field_paths_use_one_notation() -> None:
    """`containers[1].timeout` everywhere: no `containers.1.timeout`, no `(top level): ...`."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"containers": [{"id": "a", "port": 1}, {"id": "b", "port": 2, "timeout": -1}]}, environ={})
    assert str(caught.value) == "containers[1].timeout: Input should be greater than 0"
    with pytest.raises(ConfigError) as caught:
        parse_config({"containers": [{"id": "a", "port": 1}, {"id": "a", "port": 2}]}, environ={})
    assert str(caught.value) == "containers[1].id 'a' is used twice"


def _json_error(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return str(caught.value).splitlines()


def test_missing_comma_points_at_the_end_of_the_previous_value(tmp_path: Path) -> None:
    # JSON itself reports the next line (3, column 3): the comma belongs on line 2.
    lines = _json_error(tmp_path, '{\n  "log": {"path": "x"}\n  "server": {}\n}\n')
    where = f"{tmp_path / 'config.json'}: invalid JSON at line 2 column 23"
    assert lines[0] == f"{where}: a ',' is missing after this value"
    assert lines[1] == '    2 |   "log": {"path": "x"}'
    assert lines[2] == "      |                       ^"
    # The caret stands right after the value that needs the comma.
    assert lines[2].index("^") == len(lines[1])


def test_other_json_errors_show_their_line_and_a_caret(tmp_path: Path) -> None:
    lines = _json_error(tmp_path, '{\n  "containers": [\n    {"id": "a"},\n  ]\n}')
    assert lines[0].endswith("invalid JSON at line 3 column 16: a trailing ',' (JSON allows none before '}' or ']')")
    assert lines[1][lines[2].index("^")] == ","
    lines = _json_error(tmp_path, '{"a": tru}')
    assert lines[0].endswith("invalid JSON at line 1 column 7: Expecting value")
    assert lines[1][lines[2].index("^") :] == "tru}"
    # Tabs are expanded on both lines, so the caret still lines up.
    lines = _json_error(tmp_path, '{\n\t"a": 1\n\t"b": 2}')
    assert lines[1][lines[2].index("^") - 1] == "1"
    # A minified file on one long line: only the part around the error is shown.
    lines = _json_error(tmp_path, '{"x": "' + "y" * 300 + '" "z": 1}')
    assert len(lines[1]) < 130 and lines[1][lines[2].index("^") - 1] == '"'
    assert _json_error(tmp_path, "\n")[0].endswith("the file is empty (it must hold one JSON object, e.g. {})")


def _containers(*containers: dict) -> dict:
    return {"containers": [{"url": "http://127.0.0.1:3000", **c} for c in containers]}


def test_models_default_to_the_container_id_and_map_to_their_container() -> None:
    config = parse_config(
        _containers({"id": "llm", "models": ["smollm2", "org/small"]}, {"id": "echo"}, {"id": "in", "external": False}),
        environ={},
    )
    assert config.models() == {"smollm2": "llm", "org/small": "llm", "echo": "echo"}  # not the internal one


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        (
            ({"id": "a", "models": ["m"]}, {"id": "b", "models": ["m"]}),
            "containers[1].models: model 'm' is already served by containers[0] (a)",
        ),
        (
            ({"id": "m"}, {"id": "b", "models": ["m"]}),
            "containers[1].models: model 'm' is already served by containers[0] (m)",
        ),
        (({"id": "a", "models": [""]},), "models"),
        (({"id": "a", "models": "m"},), "models"),
    ],
)
def test_a_model_served_twice_or_malformed_is_a_config_error(containers: tuple, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_containers(*containers), environ={})
    assert expected in str(caught.value)


def test_a_container_may_list_a_model_twice() -> None:
    assert parse_config(_containers({"id": "a", "models": ["m", "m"]}), environ={}).models() == {"m": "a"}
