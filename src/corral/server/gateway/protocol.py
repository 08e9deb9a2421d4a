"""The little of OpenAI's wire format the gateway reads or writes itself.

Request bodies are relayed as the client sent them, but for one addition: a
stream is always asked for its usage (``stream_options.include_usage``),
because that final chunk is how corral meters streams. When the client did
not ask for it, the usage chunk is taken out of the stream again
(``StreamUsage``), so the client gets exactly what it asked for.

Answers are relayed as bytes; the gateway reads only their ``usage``: in a
plain answer it finds the object by searching for its key from the end, not
by parsing the whole answer (an embeddings answer can be megabytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from corral.server.gateway.errors import bad_request

_decoder = json.JSONDecoder()
_USAGE_KEY = b'"usage"'


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What routing and relaying need from an inference request's body."""

    model: str
    stream: bool
    wants_usage: bool
    """A stream whose client asked for the usage chunk."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def parse_request(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; a 400 ``GatewayError`` when it is not one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"The request body is not valid JSON: {e}", "invalid_json") from e
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    return parsed


def model_of(request: dict[str, Any]) -> str:
    """The model a request names; a 400 ``GatewayError`` when it names none."""
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "The request body must name a model: 'model' is missing or not a string.",
            "missing_model",
            param="model",
        )
    return model


def read_head(body: bytes, parsed: dict[str, Any] | None = None) -> tuple[RequestHead, bytes]:
    """The request's head, and the body to send upstream (the same bytes,
    unless a stream had to be asked for its usage). ``parsed`` is ``body``
    already parsed. A 400 ``GatewayError`` when the body is not a JSON object
    or names no model."""
    if parsed is None:
        parsed = parse_request(body)
    model = model_of(parsed)
    # Anything but a JSON true is a plain request to us; the engine rejects
    # a malformed value itself, and that answer is relayed as it is.
    stream = parsed.get("stream") is True
    if not stream:
        return RequestHead(model, stream=False, wants_usage=False), body
    options = parsed.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return RequestHead(model, stream=True, wants_usage=True), body
    if options is None and "stream_options" not in parsed:
        # The common case: splice the option in after the opening brace
        # rather than write the whole body again.
        start = body.index(b"{") + 1
        body = b'%s"stream_options":{"include_usage":true},%s' % (body[:start], body[start:])
    else:
        merged = dict(options) if isinstance(options, dict) else {}
        merged["include_usage"] = True
        parsed["stream_options"] = merged
        body = json.dumps(parsed, ensure_ascii=False).encode()
    return RequestHead(model, stream=True, wants_usage=False), body


def _usage_of(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens")
    completion = value.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion or 0)


def usage_in_answer(answer: bytes) -> Usage | None:
    """The ``usage`` object of a plain JSON answer, when it has one."""
    at = answer.rfind(_USAGE_KEY)
    if at < 0:
        return None
    start = answer.find(b"{", at + len(_USAGE_KEY))
    colon = answer.find(b":", at + len(_USAGE_KEY))
    if start < 0 or colon < 0 or answer[colon + 1 : start].strip():
        return None  # "usage": null, or something else
    try:
        value, _ = _decoder.raw_decode(answer[start : start + 4096].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _usage_of(value)


class StreamUsage:
    """Reads the usage out of a relayed stream, event by event, and takes the
    usage chunk out when the client did not ask for it.

    Chunks without the word ``"usage"`` (all but the last, in practice) pass
    through untouched after one substring search. An event split across
    chunks is held until it is whole, so a chunk is only ever relayed as
    whole events.
    """

    def __init__(self, *, keep_usage: bool) -> None:
        self._keep = keep_usage
        self._partial = b""
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """What to relay of ``chunk`` (maybe nothing)."""
        if self._partial:
            chunk = self._partial + chunk
            self._partial = b""
        if not chunk.endswith(b"\n\n") and not chunk.endswith(b"\r\n\r\n"):
            cut = max(chunk.rfind(b"\n\n"), chunk.rfind(b"\r\n\r\n"))
            if cut < 0:
                self._partial = chunk
                return b""
            end = cut + (2 if chunk[cut : cut + 2] == b"\n\n" else 4)
            chunk, self._partial = chunk[:end], chunk[end:]
        if _USAGE_KEY not in chunk:
            return chunk
        return b"".join(self._event(e) for e in _events(chunk))

    def rest(self) -> bytes:
        """What is left when the stream ends (an event without its end)."""
        rest, self._partial = self._partial, b""
        return rest

    def _event(self, event: bytes) -> bytes:
        if _USAGE_KEY not in event:
            return event
        data = b"".join(
            line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return event
        if not isinstance(parsed, dict):
            return event
        usage = _usage_of(parsed.get("usage"))
        if usage is None:
            return event
        self.usage = usage
        if self._keep:
            return event
        if not parsed.get("choices"):
            return b""  # the usage chunk the gateway asked for: not the client's
        # Usage riding on a chunk with content (some engines do): keep the rest.
        del parsed["usage"]
        return b"data: " + json.dumps(parsed, ensure_ascii=False).encode() + b"\n\n"


def _events(chunk: bytes) -> list[bytes]:
    """Whole events, each with its blank-line ending."""
    separator = b"\r\n\r\n" if b"\r\n\r\n" in chunk else b"\n\n"
    parts = chunk.split(separator)
    return [p + separator for p in parts[:-1]]
