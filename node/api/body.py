"""Reading a request body: refused early when too large, and never a 500 when it
cannot be read to its end."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from node.api.appkeys import MAX_BODY
from node.api.errors import UnreadableBody

log = logging.getLogger(__name__)


async def read_body(request: web.Request) -> bytes:
    limit = request.app[MAX_BODY]
    length = request.content_length
    if length is not None and length > limit:
        # At once, from the header: the client need not send (nor we read) the body.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    try:
        return await request.read()
    except ConnectionError:
        # The client left mid-body: nobody to answer, and nothing worth more than DEBUG.
        raise UnreadableBody("Client disconnected before the request body ended", client_gone=True) from None
    except RequestPayloadError as error:
        # E.g. `Content-Encoding: gzip` on a body that is not gzip, or a broken chunked
        # encoding. aiohttp would read the rest again after the answer and log the same
        # error with a traceback: the body is over as far as this request goes.
        request.content.feed_eof()
        cause = error.__cause__ or error
        reason = getattr(cause, "message", None) or str(cause)
        raise UnreadableBody(f"Request body could not be read: {' '.join(str(reason).split())}") from None
