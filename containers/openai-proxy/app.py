"""openai-proxy: runs chat jobs against any OpenAI-compatible upstream, behind the Infernet container protocol.

`data` is an OpenAI chat request; it is sent to `UPSTREAM_URL/chat/completions` with the
upstream's authentication (none, a Bearer key with an optional workspace header, or a Gonka
signature) and the upstream's `chat.completion` is the answer. With destination 2 (STREAM) the
upstream is asked to stream (with `stream_options.include_usage`) and its server-sent events
become newline-delimited JSON, one `chat.completion.chunk` per line, as containers/llm streams.

Upstream errors and timeouts become HTTP errors `{"error": "..."}` naming the upstream's status
and message. Secrets (the API key, the Gonka private key) come from the environment and are
never logged or put in an error: every message leaving this process is scrubbed of them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

try:
    import infernet_service as svc
except ImportError:  # run from the source tree: the shared module lives in containers/common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
    import infernet_service as svc

from gonka_signing import LAYOUTS, GonkaSigner, SigningError

log = logging.getLogger("openai-proxy")

SERVICE_NAME = "openai-proxy"
AUTH_MODES = ("none", "bearer", "gonka")
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_WORKSPACE_HEADER = "x-deci-workspace"
MAX_ERROR_TEXT = 500  # characters of an upstream's non-JSON error body worth repeating
# The job's destination decides streaming; a caller's own stream fields are replaced.
STREAM_FIELDS = ("stream", "stream_options")


class UpstreamError(Exception):
    """The upstream could not answer; `status` is what the container answers the node."""

    def __init__(self, status: int, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


# ---------------------------------------------------------------------------------------------
# Settings (from the environment; a bad one stops the process naming the variable, never its value
# when it is a secret)


@dataclass(frozen=True)
class Settings:
    url: str  # the upstream's base, e.g. http://127.0.0.1:4001/v1
    auth: str
    timeout_s: float
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    workspace: str | None = None
    workspace_header: str = DEFAULT_WORKSPACE_HEADER
    signer: GonkaSigner | None = None
    gonka_key: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        found = [self.api_key or "", self.gonka_key or ""]
        if self.gonka_key and self.gonka_key.lower().startswith("0x"):
            found.append(self.gonka_key[2:])
        return tuple(s for s in found if len(s) >= 4)


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value.strip() if value and value.strip() else None


def load_settings(environ: Mapping[str, str]) -> Settings:
    url = _env(environ, "UPSTREAM_URL")
    if url is None:
        raise SystemExit("UPSTREAM_URL is required: the upstream's OpenAI base URL, e.g. http://host:4000/v1")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SystemExit(f"UPSTREAM_URL must be an http(s) URL like http://host:4000/v1, got {url!r}")
    if parts.username or parts.password:
        raise SystemExit("UPSTREAM_URL must not carry credentials; use UPSTREAM_AUTH=bearer and UPSTREAM_API_KEY")
    auth = (_env(environ, "UPSTREAM_AUTH") or "none").lower()
    if auth not in AUTH_MODES:
        raise SystemExit(f"UPSTREAM_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
    raw_timeout = _env(environ, "UPSTREAM_TIMEOUT")
    try:
        timeout = float(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT_S
    except ValueError:
        raise SystemExit(f"UPSTREAM_TIMEOUT must be a number of seconds, got {raw_timeout!r}") from None
    if not 0 < timeout < 86400:
        raise SystemExit(f"UPSTREAM_TIMEOUT must be more than 0 and less than a day, got {raw_timeout!r}")

    api_key = workspace = key = None
    signer = None
    if auth == "bearer":
        api_key = _env(environ, "UPSTREAM_API_KEY")
        if api_key is None:
            raise SystemExit("UPSTREAM_AUTH=bearer needs UPSTREAM_API_KEY")
        workspace = _env(environ, "UPSTREAM_WORKSPACE")
    elif auth == "gonka":
        key = _env(environ, "GONKA_PRIVATE_KEY")
        transfer = _env(environ, "GONKA_TRANSFER_ADDRESS")
        if key is None:
            raise SystemExit("UPSTREAM_AUTH=gonka needs GONKA_PRIVATE_KEY (hex)")
        if transfer is None:
            raise SystemExit("UPSTREAM_AUTH=gonka needs GONKA_TRANSFER_ADDRESS (the upstream node's gonka address)")
        layout = (_env(environ, "GONKA_SIGNATURE_LAYOUT") or "v2").lower()
        if layout not in LAYOUTS:
            raise SystemExit(f"GONKA_SIGNATURE_LAYOUT must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        try:
            signer = GonkaSigner(key, transfer, layout)
        except SigningError as error:  # its messages never hold the key
            raise SystemExit(str(error)) from None
    return Settings(
        url=url.rstrip("/"),
        auth=auth,
        timeout_s=timeout,
        model=_env(environ, "UPSTREAM_MODEL"),
        api_key=api_key,
        workspace=workspace,
        workspace_header=_env(environ, "UPSTREAM_WORKSPACE_HEADER") or DEFAULT_WORKSPACE_HEADER,
        signer=signer,
        gonka_key=key,
    )


# ---------------------------------------------------------------------------------------------
# Requests


def upstream_body(data: Any, stream: bool, model_override: str | None) -> bytes:
    """The exact bytes sent (and, in gonka mode, signed)."""
    if not isinstance(data, dict):
        raise svc.BadInput(
            'data must be an OpenAI chat request like {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}, '
            f"got {type(data).__name__}"
        )
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise svc.BadInput("data.messages must be a non-empty list of {role, content} messages")
    body = {key: value for key, value in data.items() if key not in STREAM_FIELDS}
    if model_override is not None:
        body["model"] = model_override
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise svc.BadInput("data.model must name the upstream's model (or set UPSTREAM_MODEL)")
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _upstream_message(payload: bytes) -> str:
    """The upstream's error message: OpenAI's {"error": {"message"}}, the Infernet {"error": "..."}, or text."""
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        document = json.loads(text)
    except ValueError:
        return text[:MAX_ERROR_TEXT] or "(empty body)"
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return error["message"] + (f" (code {code})" if isinstance(code, str) and code else "")
    if isinstance(error, str):
        return error
    if isinstance(document, dict) and isinstance(document.get("detail"), str):
        return str(document["detail"])
    return text[:MAX_ERROR_TEXT]


def status_for(upstream_status: int) -> int:
    """What the container answers the node for an upstream's error status.

    The caller's request was refused (400, 404 unknown model, 413, 422): 400, so the node reports
    a refused request. The proxy's own credentials were refused (401, 403) or the upstream failed
    (5xx, anything else): 502, an operator's problem, not the caller's. 429 stays 429.
    """
    if upstream_status in (400, 404, 409, 413, 422):
        return 400
    if upstream_status == 429:
        return 429
    return 502


class Proxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def scrub(self, text: str) -> str:
        """Belt and braces: an error or log line never carries a secret, whatever the upstream echoed."""
        for secret in self.settings.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookies: each job stands alone. trust_env off: no proxy variables redirect secrets.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def headers(self, body: bytes, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        settings = self.settings
        if settings.auth == "bearer":
            headers["Authorization"] = f"Bearer {settings.api_key}"
            if settings.workspace:
                headers[settings.workspace_header] = settings.workspace
        elif settings.auth == "gonka":
            assert settings.signer is not None
            headers.update(settings.signer.headers(body))
        return headers

    def _failure(self, status: int, message: str, retry_after: str | None = None) -> UpstreamError:
        return UpstreamError(status_for(status), self.scrub(f"upstream answered HTTP {status}: {message}"), retry_after)

    async def _open(self, body: bytes, stream: bool) -> aiohttp.ClientResponse:
        """POST to the upstream; raise UpstreamError unless it answered 2xx."""
        timeout_s = self.settings.timeout_s
        # A plain call must finish in time; a stream must start in time and never go quiet longer.
        timeout = (
            aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
            if stream
            else aiohttp.ClientTimeout(total=timeout_s)
        )
        url = self.settings.url + "/chat/completions"
        try:
            response = await self.session().post(url, data=body, headers=self.headers(body, stream), timeout=timeout)
        except TimeoutError:
            raise UpstreamError(504, f"upstream did not answer within {timeout_s:g}s (UPSTREAM_TIMEOUT)") from None
        except aiohttp.ClientError as error:
            raise UpstreamError(
                502, self.scrub(f"could not reach the upstream {self.settings.url}: {type(error).__name__}: {error}")
            ) from None
        if response.status >= 400:
            try:
                payload = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                payload = b""
            finally:
                response.release()
            raise self._failure(response.status, _upstream_message(payload), response.headers.get("Retry-After"))
        return response

    async def complete(self, job: svc.Job) -> Any:
        body = upstream_body(job.data, False, self.settings.model)
        started = time.monotonic()
        response = await self._open(body, stream=False)
        try:
            payload = await response.read()
        except TimeoutError:
            raise UpstreamError(
                504, f"upstream did not answer within {self.settings.timeout_s:g}s (UPSTREAM_TIMEOUT)"
            ) from None
        except aiohttp.ClientError as error:
            raise UpstreamError(502, self.scrub(f"the upstream's answer broke off: {type(error).__name__}")) from None
        finally:
            response.release()
        try:
            answer = json.loads(payload)
        except ValueError:
            raise UpstreamError(
                502, self.scrub("upstream answered HTTP 200 with non-JSON: " + _upstream_message(payload))
            ) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamError(502, "upstream answered HTTP 200 with something that is not a chat completion")
        log.info("upstream answered %d in %.3fs", response.status, time.monotonic() - started)
        return answer

    async def stream(self, job: svc.Job) -> AsyncIterator[str]:
        """Open the upstream stream first, so a refusal is an HTTP error before the 200 is sent."""
        body = upstream_body(job.data, True, self.settings.model)
        response = await self._open(body, stream=True)
        if response.content_type != "text/event-stream":  # e.g. a server that ignores `stream`
            response.release()
            raise UpstreamError(
                502,
                f"upstream answered a stream request with {response.content_type or 'no type'}, not text/event-stream",
            )
        return self._relay(response)

    async def _relay(self, response: aiohttp.ClientResponse) -> AsyncIterator[str]:
        """Upstream server-sent events -> NDJSON lines; an error after the start is the last line."""
        started = time.monotonic()
        lines = 0
        data: list[str] = []
        try:
            while True:
                try:
                    raw = await response.content.readline()
                except TimeoutError:
                    yield self._error_line(f"upstream went quiet for {self.settings.timeout_s:g}s (UPSTREAM_TIMEOUT)")
                    return
                except (aiohttp.ClientError, ValueError) as error:  # ValueError: a line over aiohttp's limit
                    yield self._error_line(f"the upstream stream broke off: {type(error).__name__}")
                    return
                if not raw:  # the upstream closed without [DONE]: pass on what came
                    break
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                    continue
                if line or not data:  # other fields (event:, id:, comments) carry nothing here
                    continue
                event, data = "\n".join(data), []  # a blank line ends the event
                if event == "[DONE]":
                    break
                try:
                    chunk = json.loads(event)
                except ValueError:
                    yield self._error_line("the upstream sent an event that is not JSON: " + event[:200])
                    return
                if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                    yield self._error_line(
                        "upstream error during the stream: " + _upstream_message(json.dumps(chunk).encode())
                    )
                    return
                lines += 1
                yield json.dumps(chunk, ensure_ascii=False, separators=(", ", ": ")) + "\n"
        finally:
            response.release()
            log.info("upstream stream: %d chunks in %.3fs", lines, time.monotonic() - started)

    def _error_line(self, message: str) -> str:
        message = self.scrub(message)
        log.warning("%s", message)
        return json.dumps({"error": message}) + "\n"


@web.middleware
async def upstream_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except UpstreamError as error:
        log.warning("job failed: %s", error.message)  # already scrubbed
        headers = {"Retry-After": error.retry_after} if error.retry_after else None
        return svc.error_response(error.status, error.message, headers)


def build_service(proxy: Proxy) -> svc.Service:
    return svc.Service(
        name=SERVICE_NAME,
        compute=proxy.complete,
        stream=proxy.stream,
        description="OpenAI chat requests forwarded to an OpenAI-compatible upstream",
        stream_content_type="application/x-ndjson",
        resources=lambda: {
            "upstream": {
                "auth": proxy.settings.auth,
                "model": proxy.settings.model,
                **({"requester_address": proxy.settings.signer.address} if proxy.settings.signer else {}),
            }
        },
    )


def build_app(proxy: Proxy) -> web.Application:
    app = svc.build_app(build_service(proxy))
    app.middlewares.append(upstream_errors)  # inside json_errors: an UpstreamError never becomes a 500

    async def close(_: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
    return app


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = load_settings(os.environ)
    proxy = Proxy(settings)
    host = os.environ.get("HOST", "0.0.0.0")
    port = svc.env_int("PORT", 3000, minimum=1)
    log.info(
        "%s listening on %s:%d, upstream %s (auth %s%s)",
        SERVICE_NAME,
        host,
        port,
        settings.url,
        settings.auth,
        f", requester {settings.signer.address}" if settings.signer else "",
    )
    web.run_app(
        build_app(proxy),
        host=host,
        port=port,
        print=None,
        shutdown_timeout=5.0,
        access_log_format='%a "%r" %s %bB %Tfs',
    )


if __name__ == "__main__":
    main()
