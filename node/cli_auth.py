"""`infernet-node keys create|list|revoke` and `infernet-node usage`: against the configured store.

Each command opens `store.url` from config.json, brings its schema up to date
(migrations) and runs one short transaction, so it works beside running nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from node.auth.keys import ApiKey, hash_secret, key_caller, new_secret
from node.auth.quotas import Limits
from node.config import Config
from node.store.auth_sql import AuthStore
from node.store.engine import open_store
from node.store.repositories import auth_repository

T = TypeVar("T")


class UsageError(Exception):
    """A bad argument; the message names it."""


def parse_date(text: str, option: str) -> float:
    """ISO 8601 date or date-time; without a zone it is UTC. Unix seconds."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


async def _with_repository(config: Config, work: Callable[[AuthStore], Awaitable[T]]) -> T:
    engine = await open_store(config.store.url)  # migrates; StoreUnusable names what is wrong
    try:
        return await work(auth_repository(engine))
    finally:
        await engine.dispose()


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def create(config: Config, args: argparse.Namespace) -> int:
    now = time.time()
    expires = parse_date(args.expires, "--expires") if args.expires else None
    if expires is not None and expires <= now:
        raise UsageError(f"--expires: {args.expires} is in the past")
    secret = new_secret()
    key = ApiKey(
        name=args.name,
        key_hash=hash_secret(secret),
        created_at=now,
        workspace=args.workspace,
        limits=Limits(rpm=args.rpm, tpm=args.tpm, token_budget=args.token_budget),
        expires_at=expires,
    )
    if not asyncio.run(_with_repository(config, lambda repository: repository.add_key(key))):
        print(f"infernet-node: a key named {args.name!r} exists already (names are never reused)", file=sys.stderr)
        return 1
    print(f"created key {args.name!r}; its secret is shown once, below: store it now", file=sys.stderr)
    print(secret)
    return 0


def list_keys(config: Config, _args: argparse.Namespace) -> int:
    now = time.time()
    keys = asyncio.run(_with_repository(config, lambda repository: repository.list_keys()))
    rows = [
        [
            key.name,
            key.state(now),
            key.workspace or "-",
            _limit(key.limits.rpm),
            _limit(key.limits.tpm),
            _limit(key.limits.token_budget),
            str(used),
            _when(key.created_at),
            _when(key.expires_at),
        ]
        for key, used in keys
    ]
    header = ["NAME", "STATE", "WORKSPACE", "RPM", "TPM", "TOKEN_BUDGET", "TOKENS_USED", "CREATED", "EXPIRES"]
    print(_table(header, rows) if rows else "no keys")
    return 0


def revoke(config: Config, args: argparse.Namespace) -> int:
    done = asyncio.run(_with_repository(config, lambda repository: repository.revoke_key(args.name, time.time())))
    if not done:
        print(f"infernet-node: no active key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked key {args.name!r}")
    return 0


def usage(config: Config, args: argparse.Namespace) -> int:
    since = parse_date(args.since, "--since") if args.since else None
    caller = key_caller(args.key) if args.key else None
    totals = asyncio.run(_with_repository(config, lambda repository: repository.usage(caller, since)))
    if not totals:
        print("no usage recorded")
        return 0
    rows: list[list[str]] = []
    callers: dict[str, tuple[int, int]] = {}
    for total in totals:
        tokens = total.prompt_tokens + total.completion_tokens
        rows.append(
            [
                total.caller,
                total.model or "-",
                str(total.calls),
                str(total.prompt_tokens),
                str(total.completion_tokens),
                str(tokens),
            ]
        )
        calls, all_tokens = callers.get(total.caller, (0, 0))
        callers[total.caller] = (calls + total.calls, all_tokens + tokens)
    print(_table(["CALLER", "MODEL", "CALLS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "TOTAL_TOKENS"], rows))
    print()
    print(
        _table(
            ["CALLER", "CALLS", "TOTAL_TOKENS"],
            [[caller, str(calls), str(tokens)] for caller, (calls, tokens) in callers.items()],
        )
    )
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _workspace(text: str) -> str:
    if not text.strip() or len(text) > 256:
        raise argparse.ArgumentTypeError("must be 1 to 256 characters")
    return text


def _name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use up to 128 letters, digits and _ . @ - (starting with a letter or digit)"
        )
    return text


def add_commands(
    commands: argparse._SubParsersAction,
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys (in the configured store)")
    actions = keys.add_subparsers(dest="action", required=True)
    made = actions.add_parser("create", help="create a key and print its secret (once)")
    made.add_argument("--name", required=True, type=_name, help="a name for the key (unique, never reused)")
    made.add_argument("--workspace", type=_workspace, help="the workspace callers must name in the workspace header")
    made.add_argument("--rpm", type=_positive, help="requests per minute")
    made.add_argument("--tpm", type=_positive, help="tokens per minute")
    made.add_argument("--token-budget", type=_positive, help="tokens in total")
    made.add_argument("--expires", help="expiry date, e.g. 2027-01-31 or 2027-01-31T12:00:00Z (UTC if no zone)")
    made.set_defaults(handler=create)
    listed = actions.add_parser("list", help="list the keys (never their secrets)")
    listed.set_defaults(handler=list_keys)
    revoked = actions.add_parser("revoke", help="revoke a key: every node refuses it from its next request")
    revoked.add_argument("name")
    revoked.set_defaults(handler=revoke)
    for parser in (made, listed, revoked):
        config_option(parser)
    used = commands.add_parser("usage", help="tokens used, per caller and per model")
    used.add_argument("--key", help="only this key's calls")
    used.add_argument("--since", help="only calls since this date (UTC if no zone)")
    used.set_defaults(handler=usage)
    config_option(used)
