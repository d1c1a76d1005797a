"""Small HTTP helpers shared by the API services: JSON responses and capped request bodies."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class JSONResponse(Response):
    """A JSON response written by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


class BodyTooLargeError(Exception):
    """The request body is over the configured limit (never buffered past it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")
        self.limit = limit


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing it as soon as it would exceed ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLargeError(limit)
    return out


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body (UTF-8), refusing it as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "gzip":
        body = gunzip_capped(body, limit)
    elif encoding != "identity":
        raise ValueError(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    check_utf8(body)
    return body


def check_utf8(body: bytes) -> None:
    """Refuse a body that is not UTF-8 (JSON must be), naming the first bad byte and its offset."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        byte = body[bad.start : bad.start + 1].hex()
        raise ValueError(
            f"the body is not valid UTF-8: {bad.reason} (byte 0x{byte}) at byte {bad.start}"
        ) from None
