"""Auth on the real app over real HTTP: /api with keys, /v1's modes (none: loopback only; signatures;
either) in front of the real /v1 handler and the trivial chat service as a real process; refusals in
each surface's error shape, usage records, /metrics."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from coincurve import PrivateKey

from node.api.auth import AUTH
from node.app import ENGINE, build_app
from node.auth.bech32 import address_of
from node.auth.keys import ApiKey, hash_secret, new_secret
from node.auth.quotas import Limits
from node.config import parse_config
from node.store.engine import create_engine, migrate, sqlite_file
from node.store.repositories import auth_repository
from tests.support.processes import node_config, service_process

NODE_ADDRESS = address_of(PrivateKey(bytes.fromhex("33" * 32)).public_key.format())
USER = PrivateKey(bytes.fromhex("11" * 32))
USER_ADDRESS = address_of(USER.public_key.format())


@pytest.fixture(scope="module")
def chat_url() -> Iterator[str]:
    """The trivial chat service (tests/support/chat_service.py) as a real process: /v1's model."""
    with service_process("chat") as url:
        yield url


async def make(
    aiohttp_client: Any, tmp_path: Path, chat_url: str, keys: dict[str, ApiKey] | None = None, **auth: Any
) -> TestClient:
    raw = node_config(
        tmp_path,
        [{"id": "chat", "url": chat_url, "models": ["tiny"]}],
        auth=auth,
        server={"trusted_proxies": ["127.0.0.1"]},  # lets a test pose as a remote caller
    )
    config = parse_config(raw, environ={})
    engine = create_engine(config.store.url)
    await migrate(engine)
    for key in (keys or {}).values():
        assert await auth_repository(engine).add_key(key)
    await engine.dispose()
    return await aiohttp_client(build_app(config))


def key(name: str, **fields: Any) -> tuple[str, ApiKey]:
    secret = new_secret()
    return secret, ApiKey(name, hash_secret(secret), time.time(), **fields)


def signed_headers(body: bytes, at_ns: int | None = None, key: PrivateKey = USER) -> dict[str, str]:
    timestamp = at_ns or time.time_ns()
    message = hashlib.sha256(body).hexdigest().encode() + str(timestamp).encode() + NODE_ADDRESS.encode()
    return {
        "Authorization": base64.b64encode(key.sign_recoverable(message)[:64]).decode(),
        "X-Requester-Address": address_of(key.public_key.format()),
        "X-Timestamp": str(timestamp),
    }


REMOTE = {"X-Forwarded-For": "203.0.113.9"}
CHAT = "/v1/chat/completions"
# The chat service counts 5 prompt tokens for this and answers "You said: hello there", cut at 4 tokens.
BODY = b'{"model":"tiny","messages":[{"role":"user","content":"hello there"}],"max_tokens":4}'


async def test_api_with_keys(
    aiohttp_client: Any, tmp_path: Path, chat_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.api.auth")
    good, good_key = key("good")
    scoped, scoped_key = key("scoped", workspace="ws-1")
    limited, limited_key = key("limited", limits=Limits(rpm=2))
    client = await make(
        aiohttp_client,
        tmp_path,
        chat_url,
        {"good": good_key, "scoped": scoped_key, "limited": limited_key},
        api="keys",
        workspace_header="x-team",
    )
    # No key: 401 in the Infernet shape, naming the reason.
    response = await client.get("/api/jobs")
    assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.json() == {
        "error": "this surface needs an API key (Authorization: Bearer <key>)",
        "params": {"reason": "no_credentials"},
    }
    response = await client.get("/api/jobs", headers={"Authorization": f"Bearer {good}x"})
    assert response.status == 401 and (await response.json())["params"] == {"reason": "unknown_key"}
    assert (await client.get("/api/jobs", headers={"Authorization": f"Bearer {good}"})).status == 200
    # The workspace header, under its configured name.
    response = await client.get("/api/jobs", headers={"Authorization": f"Bearer {scoped}", "x-deci-workspace": "ws-1"})
    assert response.status == 403 and (await response.json())["params"] == {"reason": "wrong_workspace"}
    response = await client.get("/api/jobs", headers={"Authorization": f"Bearer {scoped}", "X-Team": "ws-1"})
    assert response.status == 200
    # Requests per minute.
    headers = {"Authorization": f"Bearer {limited}"}
    assert [(await client.get("/api/jobs", headers=headers)).status for _ in range(2)] == [200, 200]
    response = await client.get("/api/jobs", headers=headers)
    assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    assert (await response.json())["params"] == {"reason": "requests_per_minute"}
    # Outside /api nothing is asked.
    assert (await client.get("/health")).status == 200
    # Who was refused and why is logged, by the key's name; never a secret.
    assert "(key:scoped): wrong_workspace" in caplog.text and "(key:limited): requests_per_minute" in caplog.text
    assert all(secret not in caplog.text for secret in (good, scoped, limited))


async def test_api_stays_open_by_default(aiohttp_client: Any, tmp_path: Path, chat_url: str) -> None:
    client = await make(aiohttp_client, tmp_path, chat_url)
    assert (await client.get("/api/jobs", headers=REMOTE)).status == 200


async def test_v1_by_default_serves_loopback_callers_only(aiohttp_client: Any, tmp_path: Path, chat_url: str) -> None:
    client = await make(aiohttp_client, tmp_path, chat_url)
    response = await client.post(CHAT, data=BODY)
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "You said: hello there"
    response = await client.post(CHAT, data=BODY, headers=REMOTE)
    assert response.status == 403
    error = (await response.json())["error"]
    assert error["type"] == "permission_error" and error["code"] == "not_loopback"


async def test_v1_with_signatures(
    aiohttp_client: Any, tmp_path: Path, chat_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make(aiohttp_client, tmp_path, chat_url, v1="signatures", gonka={"address": NODE_ADDRESS})
    body = BODY
    headers = signed_headers(body)
    response = await client.post(CHAT, data=body, headers={**headers, **REMOTE})
    assert response.status == 200 and (await response.json())["usage"]["total_tokens"] == 9
    caplog.set_level(logging.INFO, logger="node.api.auth")
    refusals = {
        "reused": (body, headers),
        "bad_signature": (body + b" ", signed_headers(body)),
        "stale": (body, signed_headers(body, time.time_ns() - 61 * 10**9)),
        "future": (body, signed_headers(body, time.time_ns() + 31 * 10**9)),
        "malformed_base64": (body, {**signed_headers(body), "Authorization": "%%%"}),
        "wrong_signature_length": (body, {**signed_headers(body), "Authorization": base64.b64encode(b"x").decode()}),
        "wrong_transfer_address": (body, {**signed_headers(body), "X-Transfer-Address": USER_ADDRESS}),
        "no_credentials": (body, {}),
    }
    for reason, (sent, sent_headers) in refusals.items():
        response = await client.post(CHAT, data=sent, headers={**sent_headers, **REMOTE})
        assert response.status == 401, reason
        error = (await response.json())["error"]
        assert error["type"] == "authentication_error" and error["code"] == reason, (reason, error)
    # Logged with who and why, never the signature.
    assert f"from 203.0.113.9 (gonka:{USER_ADDRESS}): reused" in caplog.text
    assert f"(claimed gonka:{USER_ADDRESS}): stale" in caplog.text
    assert "(anonymous): no_credentials" in caplog.text
    assert headers["Authorization"] not in caplog.text
    # Counted by reason.
    metrics = await (await client.get("/metrics")).text()
    assert 'infernet_auth_refusals_total{reason="reused",surface="v1"} 1.0' in metrics
    assert 'infernet_auth_refusals_total{reason="stale",surface="v1"} 1.0' in metrics
    # The admitted call's usage was recorded under its signing address.
    totals = await auth_repository(client.app[ENGINE]).usage(None, None)
    assert [(t.caller, t.model, t.calls, t.prompt_tokens, t.completion_tokens) for t in totals] == [
        (f"gonka:{USER_ADDRESS}", "tiny", 1, 5, 4)
    ]


async def test_v1_with_either_keys_or_signatures(aiohttp_client: Any, tmp_path: Path, chat_url: str) -> None:
    secret, api_key = key("k", limits=Limits(token_budget=10))
    client = await make(
        aiohttp_client, tmp_path, chat_url, {"k": api_key}, v1="either", gonka={"address": NODE_ADDRESS}
    )
    body = BODY
    assert (await client.post(CHAT, data=body, headers={**signed_headers(body), **REMOTE})).status == 200
    bearer = {"Authorization": f"Bearer {secret}", **REMOTE}
    # Each call reserves its max_tokens (4) and then uses 9: the second one's 4 do not fit in what is left of 10.
    assert (await client.post(CHAT, data=body, headers=bearer)).status == 200
    response = await client.post(CHAT, data=body, headers=bearer)
    assert response.status == 429 and response.headers["x-should-retry"] == "false"
    assert "Retry-After" not in response.headers
    error = (await response.json())["error"]
    assert error["type"] == "insufficient_quota" and error["code"] == "token_budget"
    assert "10 tokens" in error["message"]


async def test_an_authenticated_call_takes_two_store_rounds_admission_with_the_job_usage_with_the_outcome(
    aiohttp_client: Any, tmp_path: Path, chat_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, api_key = key("u", limits=Limits(rpm=100, token_budget=1000))
    client = await make(
        aiohttp_client,
        tmp_path,
        chat_url,
        {"u": api_key},
        v1="either",
        gonka={"address": NODE_ADDRESS, "limits": {"rpm": 100, "tpm": 1000, "token_budget": 1000}},
    )
    repository = auth_repository(client.app[ENGINE])
    store = sqlite_file(client.app[ENGINE])
    assert store is not None
    drains: list[int] = []  # the writer thread's rounds (each is one hand-off and one wake-up)
    poke = store._checkpointer.poke

    def counted(calls: int) -> None:
        drains.append(calls)
        poke(calls)

    monkeypatch.setattr(store._writer, "_after_batch", counted)
    streamed = BODY[:-1] + b',"stream":true}'
    calls = {"key:u": 0, f"gonka:{USER_ADDRESS}": 0}
    for caller, body in [(c, b) for c in calls for b in (BODY, streamed)]:
        headers = {"Authorization": f"Bearer {secret}"} if caller == "key:u" else signed_headers(body)
        drains.clear()
        response = await client.post(CHAT, data=body, headers={**headers, **REMOTE})
        assert response.status == 200
        text = await response.text()
        assert "You said" in text or text.endswith("data: [DONE]\n\n")
        calls[caller] += 1
        # The answer may arrive while its outcome is written; a read of the job waits for that
        # write, which holds the usage record (streams too) and the job's outcome.
        job_id = response.headers["X-Infernet-Job-Id"]
        jobs = await (await client.get(f"/api/jobs?id={job_id}", headers=REMOTE)).json()
        assert jobs[0]["status"] == "success"
        [total] = await repository.usage(caller, None)
        made = calls[caller]
        assert (total.calls, total.prompt_tokens, total.completion_tokens) == (made, 5 * made, 4 * made)
        await asyncio.sleep(0.3)  # nothing more is written after the answer
        # The key's lookup (or the signature) with the quota, and the job (running), in one round;
        # its outcome with the usage record in the second.
        assert 1 <= len(drains) <= 2, (caller, drains)


async def _jobs_stored(client: TestClient) -> int:
    store = sqlite_file(client.app[ENGINE])
    assert store is not None
    rows = await store.read(lambda connection: connection.execute("SELECT count(*) FROM jobs").fetchall())
    return int(rows[0][0])


async def test_a_refused_call_leaves_no_job_and_a_refusal_comes_before_bad_input(
    aiohttp_client: Any, tmp_path: Path, chat_url: str
) -> None:
    secret, api_key = key("once", limits=Limits(rpm=1))
    client = await make(
        aiohttp_client, tmp_path, chat_url, {"once": api_key}, v1="either", gonka={"address": NODE_ADDRESS}
    )
    bearer = {"Authorization": f"Bearer {secret}", **REMOTE}
    signed = {**signed_headers(BODY), **REMOTE}
    assert (await client.post(CHAT, data=BODY, headers=bearer)).status == 200
    assert (await client.post(CHAT, data=BODY, headers=signed)).status == 200
    assert await _jobs_stored(client) == 2
    # Refused by the store's hop (the job's write is gated on it): no job, no container call.
    response = await client.post(CHAT, data=BODY, headers=bearer)
    assert response.status == 429 and (await response.json())["error"]["code"] == "requests_per_minute"
    response = await client.post(CHAT, data=BODY, headers=signed)
    assert response.status == 401 and (await response.json())["error"]["code"] == "reused"
    assert await _jobs_stored(client) == 2
    # Bad input from a caller who is refused: the refusal is the answer.
    unknown = {"Authorization": f"Bearer {secret}x", **REMOTE}
    for body in (b"{not json", b'{"model":"nope","messages":[{"role":"user","content":"x"}]}'):
        response = await client.post(CHAT, data=body, headers=unknown)
        assert response.status == 401 and (await response.json())["error"]["code"] == "unknown_key"
    elsewhere = BODY.replace(b'"tiny"', b'"nope"')
    signed_elsewhere = {**signed_headers(elsewhere), **REMOTE}
    response = await client.post(CHAT, data=elsewhere, headers=signed_elsewhere)
    assert response.status == 404  # admitted (the signature is used), then no such model
    response = await client.post(CHAT, data=elsewhere, headers=signed_elsewhere)
    assert response.status == 401 and (await response.json())["error"]["code"] == "reused"
    response = await client.post(CHAT, data=b"{not json", headers={**signed_headers(b"{not json"), **REMOTE})
    assert response.status == 400  # admitted: its own error
    assert await _jobs_stored(client) == 2
    # /metrics counts the stored jobs as admitted, not the ones the callers' admission kept out.
    metrics = await (await client.get("/metrics")).text()
    assert 'infernet_jobs_admitted_total{container="chat"} 2.0' in metrics
    assert 'infernet_jobs_finished_total{container="chat",status="success"} 2.0' in metrics


async def test_an_admission_the_store_cannot_make_is_a_503_naming_the_store(
    aiohttp_client: Any,
    tmp_path: Path,
    chat_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret, api_key = key("u")
    client = await make(
        aiohttp_client, tmp_path, chat_url, {"u": api_key}, v1="either", api="keys", gonka={"address": NODE_ADDRESS}
    )
    repository: Any = client.app[AUTH]._repository
    submit = repository._submit_write

    def failing(work: Any) -> Any:
        def hop(db: Any) -> Any:  # the store's hop runs, and fails there (the fault injected)
            raise sqlite3.OperationalError("disk I/O error")

        return submit(hop)

    monkeypatch.setattr(repository, "_submit_write", failing)
    bearer = {"Authorization": f"Bearer {secret}", **REMOTE}
    for headers in (bearer, {**signed_headers(BODY), **REMOTE}):
        response = await client.post(CHAT, data=BODY, headers=headers)
        assert response.status == 503
        error = (await response.json())["error"]
        assert "store cannot write right now: disk I/O error" in error["message"], error
    response = await client.get("/api/jobs?id=x", headers=bearer)
    assert response.status == 503
    assert "disk I/O error" in (await response.json())["error"]
    assert await _jobs_stored(client) == 0
    # Said once in the log for the three calls (an outage fails them all), without a traceback.
    warnings = [r for r in caplog.records if "store cannot admit calls" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "disk I/O error" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
