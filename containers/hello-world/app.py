"""hello-world: an echo service for the Infernet node protocol.

JSON jobs get their `data` back verbatim, so a chain of echoes returns the input unchanged.
Stream jobs (destination 2) get a text rendering of `data`, sent in whitespace-split chunks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

try:
    import infernet_service as svc
except ImportError:  # run from the source tree: the shared module lives in containers/common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
    import infernet_service as svc

# Split after a whitespace run, before the next word: "a  b\n" -> ["a  ", "b\n"].
_CHUNK_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


def echo(job: svc.Job) -> Any:
    return job.data


def render_text(data: Any) -> str:
    """What a stream of `data` says: its prompt/input string, a bare string as is, else its JSON."""
    if isinstance(data, dict):
        for key in ("prompt", "input"):
            if isinstance(data.get(key), str):
                return data[key]
    if isinstance(data, str):
        return data
    return json.dumps(data, ensure_ascii=False)


def split_into_chunks(text: str) -> list[str]:
    """Whitespace-aligned pieces whose concatenation is exactly `text`."""
    return [piece for piece in _CHUNK_BOUNDARY.split(text) if piece]


def stream(job: svc.Job) -> list[str]:
    return split_into_chunks(render_text(job.data))


SERVICE = svc.Service(
    name="hello-world",
    compute=echo,
    stream=stream,
    stream_delay_ms_default=0,
    description="echo: returns the job data verbatim; streams its text word by word",
)

if __name__ == "__main__":
    svc.run(SERVICE)
