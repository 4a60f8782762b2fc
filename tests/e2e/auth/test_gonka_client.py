"""The official Gonka client (gonka-openai 0.2.6, its own venv) against our verifier: the bytes its
signer produces verify here, and our address derivation gives its address for the same key."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from node.auth.bech32 import address_of
from node.auth.signatures import SignatureSettings, SignatureVerifier, SignedRequest
from tests.support.gonka import gonka_python, run_snippet  # noqa: F401  (fixture)

SIGN = """
from gonka_openai.utils import gonka_address, gonka_signature
out = []
for case in args:
    body = bytes.fromhex(case["body"]) if case["kind"] == "bytes" else case["body"]
    out.append({
        "signature": gonka_signature(body, case["key"], case["timestamp"], case["transfer"]),
        "address": gonka_address(case["key"]),
    })
print(json.dumps(out))
"""


def test_the_clients_signatures_verify_and_its_addresses_match_ours(gonka_python: Path) -> None:  # noqa: F811
    node_address = address_of(PrivateKey().public_key.format())
    verifier = SignatureVerifier(SignatureSettings(address=node_address))
    cases: list[dict[str, Any]] = []
    for index in range(12):
        key = secrets.token_hex(32)
        body: str | bytes = (
            f'{{"model":"m","messages":[{{"role":"user","content":"héllo {index}"}}]}}'
            if index % 2
            else secrets.token_bytes(index * 37)  # empty, and binary bodies too
        )
        cases.append(
            {
                "key": key if index % 3 else "0x" + key,  # the client takes both spellings
                "kind": "text" if isinstance(body, str) else "bytes",
                "body": body if isinstance(body, str) else body.hex(),
                "timestamp": 1_780_000_000_000_000_000 + index * 7_919,
                "transfer": node_address,
            }
        )
    signed = run_snippet(gonka_python, SIGN, cases)
    assert len(signed) == len(cases)
    for case, result in zip(cases, signed, strict=True):
        key_hex = case["key"].removeprefix("0x")
        ours = address_of(PrivateKey(bytes.fromhex(key_hex)).public_key.format())
        assert ours == result["address"]
        body_bytes = case["body"].encode() if case["kind"] == "text" else bytes.fromhex(case["body"])
        verified = verifier.verify(
            SignedRequest(result["signature"], result["address"], str(case["timestamp"]), None, body_bytes),
            case["timestamp"],
        )
        assert verified.address == result["address"] and verified.layout == "v2"
        assert base64.b64decode(result["signature"]) == verified.signature
        # And what we would sign with coincurve for the same inputs is byte for byte the client's
        # (both are RFC 6979 deterministic and low-S).
        message = (
            hashlib.sha256(body_bytes).hexdigest().encode() + str(case["timestamp"]).encode() + node_address.encode()
        )
        assert PrivateKey(bytes.fromhex(key_hex)).sign_recoverable(message)[:64] == verified.signature
