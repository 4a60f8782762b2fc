"""Issue 13's acceptance on /v1, with real parts: a real node process, the trivial chat service
as a real process (tests/support/chat_service.py), the official Gonka client (its own venv), the
official openai SDK, the real `infernet-node keys` commands.

Every refused request must leave the chat service untouched: its CALLS_FILE lists each call
that reached it, and each test compares it before and after.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from coincurve import PrivateKey
from openai import AsyncOpenAI, OpenAI

from node.auth.bech32 import address_of
from node.auth.signatures import CURVE_ORDER
from tests.support.gonka import gonka_python, run_snippet_async  # noqa: F401  (fixture)
from tests.support.processes import NodeProcess, node_config, service_process

NODE_KEY = PrivateKey(bytes.fromhex("5e" * 32))
NODE_ADDRESS = address_of(NODE_KEY.public_key.format())
USER_KEY_HEX = "7a" * 32
USER = PrivateKey(bytes.fromhex(USER_KEY_HEX))
USER_ADDRESS = address_of(USER.public_key.format())
OTHER = PrivateKey(bytes.fromhex("8b" * 32))
CLI = str(Path(sys.executable).parent / "infernet-node")
MESSAGES = [{"role": "user", "content": "hello there"}]


class Calls:
    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self) -> int:
        if not self.path.exists():
            return 0
        return sum(1 for line in self.path.read_text().splitlines() if json.loads(line)["event"] == "call")


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Calls]]:
    calls = tmp_path_factory.mktemp("chat") / "calls.jsonl"
    with service_process("chat", env={"CALLS_FILE": str(calls)}) as url:
        yield url, Calls(calls)


@pytest.fixture(scope="module")
def node(chat: tuple[str, Calls], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    workdir = tmp_path_factory.mktemp("auth-node")
    config = node_config(
        workdir,
        [{"id": "chat", "url": chat[0], "models": ["tiny"]}],
        auth={"v1": "either", "gonka": {"address": NODE_ADDRESS}},
    )
    running = NodeProcess(config, workdir).start()
    try:
        yield running
    finally:
        running.stop()


def keys(node: NodeProcess, *args: str) -> str:
    done = subprocess.run(
        [CLI, "keys", *args, "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def signed(
    body: bytes, timestamp: int | None = None, key: PrivateKey = USER, transfer: str = NODE_ADDRESS
) -> dict[str, str]:
    timestamp = timestamp or time.time_ns()
    message = hashlib.sha256(body).hexdigest().encode() + str(timestamp).encode() + transfer.encode()
    return {
        "Authorization": base64.b64encode(key.sign_recoverable(message)[:64]).decode(),
        "X-Requester-Address": address_of(key.public_key.format()),
        "X-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


def post(node: NodeProcess, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{node.url}/v1/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


GONKA_CHAT = """
from gonka_openai import GonkaOpenAI, Endpoint
client = GonkaOpenAI(gonka_private_key=args["key"], endpoints=[Endpoint(url=args["url"], address=args["address"])],
                     max_retries=0)
whole = client.chat.completions.create(model="tiny", messages=args["messages"])
chunks = client.chat.completions.create(model="tiny", messages=args["messages"], stream=True,
                                        stream_options={"include_usage": True})
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
print(json.dumps({"whole": whole.choices[0].message.content, "usage": whole.usage.total_tokens,
                  "address": client.gonka_address, "streamed": text}))
"""


async def test_the_official_gonka_client_completes_chats_whole_and_streamed(
    node: NodeProcess,
    gonka_python: Path,  # noqa: F811
) -> None:
    answer = await run_snippet_async(
        gonka_python,
        GONKA_CHAT,
        {
            "key": USER_KEY_HEX,
            "url": f"{node.url}/v1",
            "address": NODE_ADDRESS,
            "messages": MESSAGES,
        },
    )
    assert answer["address"] == USER_ADDRESS
    assert answer["whole"] == "You said: hello there" and answer["streamed"] == "You said: hello there"
    usage = subprocess.run(
        [CLI, "usage", "--config", str(node.config_path)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"gonka:{USER_ADDRESS}  tiny" in usage


def test_bad_signatures_are_refused_with_401_and_no_container_is_called(
    node: NodeProcess, chat: tuple[str, Calls]
) -> None:
    body = json.dumps({"model": "tiny", "messages": MESSAGES}).encode()
    good = signed(body)
    assert post(node, body, good)[0] == 200
    raw = base64.b64decode(good["Authorization"])
    high_s = raw[:32] + (CURVE_ORDER - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    now = time.time_ns()
    cases = {
        "tampered body": (body.replace(b"hello", b"HELLO"), signed(body), "bad_signature"),
        "high-S twin": (body, {**signed(body), "Authorization": base64.b64encode(high_s).decode()}, "high_s"),
        "stale": (body, signed(body, now - 61 * 10**9), "stale"),
        "future": (body, signed(body, now + 31 * 10**9), "future"),
        "replayed": (body, good, "reused"),
        "other transfer address": (
            body,
            {**signed(body, transfer=USER_ADDRESS), "X-Transfer-Address": USER_ADDRESS},
            "wrong_transfer_address",
        ),
        "address not the key's": (
            body,
            {**signed(body), "X-Requester-Address": address_of(OTHER.public_key.format())},
            "bad_signature",
        ),
        "malformed base64": (body, {**signed(body), "Authorization": "!!" + good["Authorization"]}, "malformed_base64"),
        "wrong length": (
            body,
            {**signed(body), "Authorization": base64.b64encode(raw[:63]).decode()},
            "wrong_signature_length",
        ),
    }
    before = chat[1].count()
    for name, (sent, headers, reason) in cases.items():
        status, answer = post(node, sent, headers)
        assert status == 401, (name, status, answer)
        assert answer["error"]["type"] == "authentication_error" and answer["error"]["code"] == reason, (name, answer)
    assert chat[1].count() == before  # none reached the model


def test_a_replay_fails_after_a_node_restart(chat: tuple[str, Calls], tmp_path: Path) -> None:
    config = node_config(
        tmp_path,
        [{"id": "chat", "url": chat[0], "models": ["tiny"]}],
        auth={"v1": "signatures", "gonka": {"address": NODE_ADDRESS}},
    )
    body = json.dumps({"model": "tiny", "messages": MESSAGES}).encode()
    headers = signed(body)
    first = NodeProcess(config, tmp_path).start()
    try:
        assert post(first, body, headers)[0] == 200
    finally:
        first.stop()
    before = chat[1].count()
    second = NodeProcess(config, tmp_path).start()
    try:
        status, answer = post(second, body, headers)
        assert status == 401 and answer["error"]["code"] == "reused"
    finally:
        second.stop()
    assert chat[1].count() == before


def test_keys_with_the_openai_sdk(node: NodeProcess, chat: tuple[str, Calls]) -> None:
    secret = keys(node, "create", "--name", "sdk-good")
    scoped = keys(node, "create", "--name", "sdk-team", "--workspace", "ws-7")
    doomed = keys(node, "create", "--name", "sdk-doomed")
    base = f"{node.url}/v1"
    answer = OpenAI(base_url=base, api_key=secret, max_retries=0).chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == "You said: hello there"
    answer = OpenAI(
        base_url=base, api_key=scoped, max_retries=0, default_headers={"x-deci-workspace": "ws-7"}
    ).chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.usage is not None
    assert OpenAI(base_url=base, api_key=doomed, max_retries=0).models.list().data
    keys(node, "revoke", "sdk-doomed")
    before = chat[1].count()
    for api_key, headers, error in (
        (doomed, {}, openai.AuthenticationError),
        (secret + "x", {}, openai.AuthenticationError),
        (scoped, {"x-deci-workspace": "ws-8"}, openai.PermissionDeniedError),
        (scoped, {}, openai.PermissionDeniedError),
    ):
        with pytest.raises(error):
            OpenAI(base_url=base, api_key=api_key, max_retries=0).chat.completions.create(
                model="tiny",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers=headers,
            )
    assert chat[1].count() == before


async def test_rpm_is_exact_under_50_concurrent_callers_and_the_budget_holds(node: NodeProcess) -> None:
    limited = keys(node, "create", "--name", "sdk-rpm", "--rpm", "20")
    client = AsyncOpenAI(base_url=f"{node.url}/v1", api_key=limited, max_retries=0)

    async def one() -> str:
        try:
            await client.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
            return "ok"
        except openai.RateLimitError as error:
            assert error.response.headers["Retry-After"]
            assert error.body["code"] == "requests_per_minute"  # type: ignore[index]
            return "limited"

    if 60 - time.time() % 60 < 20:  # the 50 calls must fall in one minute window
        await asyncio.sleep(60 - time.time() % 60 + 0.5)
    outcomes = await asyncio.gather(*[one() for _ in range(50)])
    assert outcomes.count("ok") == 20 and outcomes.count("limited") == 30
    await client.close()

    # Each call uses 9 tokens (the chat service counts 5 for the prompt, 4 for "You said: hello there"):
    # a budget of 18 is spent by two calls exactly, and the third is refused.
    budget = keys(node, "create", "--name", "sdk-budget", "--token-budget", "18")
    sdk = OpenAI(base_url=f"{node.url}/v1", api_key=budget, max_retries=0)
    for _ in range(2):
        used = sdk.chat.completions.create(model="tiny", messages=MESSAGES).usage  # type: ignore[arg-type]
        assert used is not None and used.total_tokens == 9
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.body["type"] == "insufficient_quota"  # type: ignore[index]
