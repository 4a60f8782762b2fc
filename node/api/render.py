"""JSON responses, encoded once with the stdlib (big integers stay exact)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=_encode(body).encode("utf-8"),
        status=status,
        content_type="application/json",
    )
