"""The openai-proxy container's Gonka signer and settings, without I/O.

Its signatures must verify with the node's own verifier (node/auth/signatures.py, coincurve) and
be the bytes coincurve signs (both RFC 6979 and low-S); its address must be the node's derivation.
The byte-for-byte check against the official client's signer is in
tests/e2e/containers/test_openai_proxy.py (it needs the client's own venv).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from coincurve import PrivateKey

from node.auth.bech32 import address_of
from node.auth.signatures import CURVE_ORDER, SignatureSettings, SignatureVerifier, SignedRequest

PROXY_DIR = Path(__file__).resolve().parents[3] / "containers" / "openai-proxy"


def _load(name: str, file: str) -> ModuleType:
    if str(PROXY_DIR) not in sys.path:
        sys.path.insert(0, str(PROXY_DIR))
    spec = importlib.util.spec_from_file_location(name, PROXY_DIR / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


signing = _load("gonka_signing", "gonka_signing.py")
proxy_app = _load("openai_proxy_app", "app.py")

NODE_ADDRESS = address_of(PrivateKey(bytes.fromhex("5e" * 32)).public_key.format())


@pytest.mark.parametrize("key_hex", ["01" * 32, "7a" * 32, "fe" * 16 + "00" * 16, "0x" + "3c" * 32])
def test_the_address_is_the_nodes_derivation(key_hex: str) -> None:
    signer = signing.GonkaSigner(key_hex, NODE_ADDRESS)
    raw = bytes.fromhex(key_hex.removeprefix("0x"))
    assert signer.address == address_of(PrivateKey(raw).public_key.format())


def test_signatures_verify_with_the_nodes_verifier_and_equal_coincurves() -> None:
    verifier = SignatureVerifier(SignatureSettings(address=NODE_ADDRESS))
    high_s_seen = False
    for index in range(40):
        key = hashlib.sha256(b"key %d" % index).hexdigest()
        signer = signing.GonkaSigner(key, NODE_ADDRESS, clock=lambda index=index: 1_780_000_000_000_000_000 + index)
        body = ('{"model":"m","messages":[{"role":"user","content":"héllo ' + str(index) + '"}]}').encode()
        headers = signer.headers(body)
        signature = base64.b64decode(headers["Authorization"])
        assert len(signature) == 64 and int.from_bytes(signature[32:], "big") <= CURVE_ORDER // 2
        verified = verifier.verify(
            SignedRequest(
                headers["Authorization"],
                headers["X-Requester-Address"],
                headers["X-Timestamp"],
                headers["X-Transfer-Address"],
                body,
            ),
            int(headers["X-Timestamp"]),
        )
        assert verified.address == signer.address and verified.layout == "v2"
        message = hashlib.sha256(body).hexdigest().encode() + headers["X-Timestamp"].encode() + NODE_ADDRESS.encode()
        assert PrivateKey(bytes.fromhex(key)).sign_recoverable(message)[:64] == signature
        # ecdsa's raw s is above n/2 about half the time: the fold to low-S is exercised
        _, s = signer._key.sign_deterministic(message, hashfunc=hashlib.sha256, sigencode=lambda r, s, order: (r, s))
        high_s_seen |= s > CURVE_ORDER // 2
    assert high_s_seen


def test_a_tampered_body_or_another_timestamp_does_not_verify() -> None:
    verifier = SignatureVerifier(SignatureSettings(address=NODE_ADDRESS))
    signer = signing.GonkaSigner("42" * 32, NODE_ADDRESS, clock=lambda: 1_780_000_000_000_000_000)
    headers = signer.headers(b'{"a":1}')
    for body, stamp in ((b'{"a":2}', headers["X-Timestamp"]), (b'{"a":1}', "1780000000000000001")):
        with pytest.raises(Exception, match=r"(?i)signature"):
            verifier.verify(
                SignedRequest(headers["Authorization"], headers["X-Requester-Address"], stamp, NODE_ADDRESS, body),
                int(stamp),
            )


def test_the_v1_layout_signs_the_raw_body() -> None:
    signer = signing.GonkaSigner("42" * 32, NODE_ADDRESS, layout="v1")
    message = b'{"a":1}' + b"17" + NODE_ADDRESS.encode()
    assert signer.sign(b'{"a":1}', 17) == PrivateKey(bytes.fromhex("42" * 32)).sign_recoverable(message)[:64]


SECRET_KEY = "c0ffee" + "ab" * 29


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, "UPSTREAM_URL is required"),
        ({"UPSTREAM_URL": "ftp://x"}, "UPSTREAM_URL must be an http(s) URL"),
        ({"UPSTREAM_URL": "http://u:p@h/v1"}, "must not carry credentials"),
        ({"UPSTREAM_URL": "http://h/v1", "UPSTREAM_AUTH": "magic"}, "UPSTREAM_AUTH must be one of"),
        ({"UPSTREAM_URL": "http://h/v1", "UPSTREAM_TIMEOUT": "soon"}, "UPSTREAM_TIMEOUT must be a number"),
        ({"UPSTREAM_URL": "http://h/v1", "UPSTREAM_TIMEOUT": "0"}, "UPSTREAM_TIMEOUT must be more than 0"),
        ({"UPSTREAM_URL": "http://h/v1", "UPSTREAM_AUTH": "bearer"}, "needs UPSTREAM_API_KEY"),
        (
            {"UPSTREAM_URL": "http://h/v1", "UPSTREAM_AUTH": "gonka", "GONKA_PRIVATE_KEY": SECRET_KEY},
            "needs GONKA_TRANSFER_ADDRESS",
        ),
        (
            {
                "UPSTREAM_URL": "http://h/v1",
                "UPSTREAM_AUTH": "gonka",
                "GONKA_PRIVATE_KEY": SECRET_KEY + "zz",
                "GONKA_TRANSFER_ADDRESS": NODE_ADDRESS,
            },
            "GONKA_PRIVATE_KEY is not hex",
        ),
        (
            {
                "UPSTREAM_URL": "http://h/v1",
                "UPSTREAM_AUTH": "gonka",
                "GONKA_PRIVATE_KEY": SECRET_KEY[:-2],
                "GONKA_TRANSFER_ADDRESS": NODE_ADDRESS,
            },
            "must be 32 bytes",
        ),
        (
            {
                "UPSTREAM_URL": "http://h/v1",
                "UPSTREAM_AUTH": "gonka",
                "GONKA_PRIVATE_KEY": "00" * 32,
                "GONKA_TRANSFER_ADDRESS": NODE_ADDRESS,
            },
            "out of range",
        ),
        (
            {
                "UPSTREAM_URL": "http://h/v1",
                "UPSTREAM_AUTH": "gonka",
                "GONKA_PRIVATE_KEY": SECRET_KEY,
                "GONKA_TRANSFER_ADDRESS": NODE_ADDRESS,
                "GONKA_SIGNATURE_LAYOUT": "v0",
            },
            "GONKA_SIGNATURE_LAYOUT",
        ),
    ],
)
def test_bad_settings_stop_the_service_naming_the_variable_never_the_key(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        proxy_app.load_settings(environ)
    assert names in str(stopped.value)
    assert "c0ffee" not in str(stopped.value)


def test_the_body_sent_replaces_the_stream_fields_and_keeps_the_rest() -> None:
    data = {
        "model": "m",
        "messages": [{"role": "user", "content": "hé"}],
        "stream": False,
        "stream_options": {},
        "temperature": 0,
    }
    assert (
        proxy_app.upstream_body(data, True, None)
        == (
            '{"model":"m","messages":[{"role":"user","content":"hé"}],"temperature":0,"stream":true,'
            '"stream_options":{"include_usage":true}}'
        ).encode()
    )
    assert b'"model":"other"' in proxy_app.upstream_body(data, False, "other")
    assert b"stream" not in proxy_app.upstream_body(data, False, None)
    bad: Any
    for bad in (None, [], {"messages": []}, {"model": "m"}, {"messages": [{"role": "user", "content": "x"}]}):
        with pytest.raises(proxy_app.svc.BadInput):
            proxy_app.upstream_body(bad, False, None)
