"""streaming: a deterministic text generator that streams its output piece by piece.

It stands in for a language model without shipping one: the "tokens" are drawn from the prompt's
own words and a fixed list of connectors, chosen by a hash of the prompt, so the same prompt and
max_tokens always give the same text. Stream jobs (destination 2) send one piece per chunk with a
delay (env STREAM_DELAY_MS, default 20); other jobs get {"output": "<the same full text>"}.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

try:
    import infernet_service as svc
except ImportError:  # run from the source tree: the shared module lives in containers/common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
    import infernet_service as svc

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 1024  # bounded: a stream must end well within the node's 60 s stream timeout
CONNECTORS = ("and", "then", "so", "because", "while", "with", "beyond", "despite", "until", "like")
FALLBACK_WORDS = ("nothing", "was", "asked")
_LCG_MULTIPLIER, _LCG_INCREMENT = 6364136223846793005, 1442695040888963407  # Knuth's MMIX constants


def parse_request(data: Any) -> tuple[str, int]:
    """(prompt, max_tokens) from `data`: {"prompt"|"input": str, "max_tokens"?: int} or a bare string."""
    if isinstance(data, str):
        return data, DEFAULT_MAX_TOKENS
    if not isinstance(data, dict):
        raise svc.BadInput(
            f'data must be an object like {{"prompt": "...", "max_tokens": 16}}, got {type(data).__name__}'
        )
    prompt = data.get("prompt", data.get("input"))
    if not isinstance(prompt, str):
        raise svc.BadInput("data.prompt (or data.input) must be a string")
    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise svc.BadInput(f"data.max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {max_tokens!r}")
    return prompt, max_tokens


def generate(prompt: str, max_tokens: int) -> list[str]:
    """`max_tokens` pieces; joined they form one sentence. Pure function of its arguments."""
    words = re.findall(r"\w+", prompt.lower()) or list(FALLBACK_WORDS)
    state = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    pieces: list[str] = []
    for i in range(max_tokens):
        state = (state * _LCG_MULTIPLIER + _LCG_INCREMENT) % 2**64  # seeded by the prompt: repeatable
        pick = state >> 33
        if i % 4 == 3:  # every fourth token links the prompt's words together
            token = CONNECTORS[pick % len(CONNECTORS)]
        else:
            token = words[pick % len(words)]
        if i == 0:
            token = token[:1].upper() + token[1:]
        pieces.append(token if i == 0 else " " + token)
    pieces[-1] += "."
    return pieces


def complete(job: svc.Job) -> dict[str, str]:
    return {"output": "".join(generate(*parse_request(job.data)))}


def stream(job: svc.Job) -> list[str]:
    return generate(*parse_request(job.data))  # parsed before the stream starts: errors stay 400


SERVICE = svc.Service(
    name="streaming",
    compute=complete,
    stream=stream,
    stream_delay_ms_default=20,
    description="deterministic text generator; streams one token per chunk",
)

if __name__ == "__main__":
    svc.run(SERVICE)
