"""A FAKE OpenAI-compatible engine: it generates nothing, it answers at once.

It is the baseline that isolates the gateway's own cost in ``bench/gateway.py``
(the same load straight at it and through corral's ``/v1``), and the upstream
that tests use to watch what the gateway does to an engine (``GET /stats``).
Nothing here is corral's: a raw ``asyncio.Protocol`` with ``httptools``'
parser (uvloop when importable), HTTP/1.1 keep-alive, no pipelining.

    python -m tests.responder --port 0 [--host 127.0.0.1] [--tokens 16]
        [--stream-events K] [--first-delay S] [--event-delay S]

Once listening it prints ``responder listening on http://HOST:PORT`` (flushed);
SIGTERM or SIGINT stops it (exit 0). ``run_responder()`` does all that for a
``with`` block.

Endpoints, answered in OpenAI's shape with a ``usage`` object:

* ``POST /v1/chat/completions``, ``/v1/completions``: ``prompt_tokens`` is the
  number of whitespace-separated words in the messages' text (or the prompt),
  at least 1; ``completion_tokens`` is ``max_tokens`` (or ``--tokens``). With
  ``"stream": true``: an event stream, chunked, one chunk per event: K content
  events (K is ``--stream-events``, one per completion token by default), the
  usage chunk (``"choices": []``) when ``stream_options.include_usage``, then
  ``data: [DONE]``. ``--first-delay`` waits before the first event and
  ``--event-delay`` between events.
  A plain chat answer lists the image parts the engine got under
  ``images_seen`` (each URL's first 40 characters and its length).
* ``POST /v1/embeddings``: an 8-dimensional vector per input.
* ``POST /v1/rerank`` (and ``/rerank``): results by relevance (the share of
  the query's words found in the document), honouring ``top_n``.
* ``GET /health``, ``GET /v1/models``, and ``GET /stats``:
  ``{"in_progress", "served", "cancelled"}`` where ``cancelled`` counts streams
  whose client went away before their end.

The API key is not checked. A body that is not a JSON object is a 400 with
an OpenAI-shaped error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import select
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httptools

try:
    import uvloop
except ImportError:  # optional: the plain event loop works too
    uvloop = None  # type: ignore[assignment]

MODEL = "responder"
CREATED = 1_700_000_000
EMBEDDING = [round(math.sin(i + 1) / 2, 6) for i in range(8)]


@dataclass(frozen=True)
class Settings:
    tokens: int = 16
    stream_events: int | None = None
    first_delay: float = 0.0
    event_delay: float = 0.0


@dataclass
class Stats:
    in_progress: int = 0
    served: int = 0
    cancelled: int = 0


class BadRequest(Exception):
    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


# --- HTTP framing ------------------------------------------------------------

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    500: b"Internal Server Error",
}
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"
_DONE = b"data: [DONE]\n\n"


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    connection = b"" if keep_alive else b"Connection: close\r\n"
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    return head % (status, _REASONS[status], len(body)) + connection + b"\r\n" + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error(status: int, message: str, code: str) -> tuple[int, bytes]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, _json({"error": {"message": message, "type": kind, "param": None, "code": code}})


# --- answers -----------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _long_text_words(text: str) -> int:
    # Splitting 256 KiB takes ~1.5 ms, hashing it ~0.1: a load repeats its bodies.
    return len(text.split())


def _words(value: Any) -> int:
    """Whitespace-separated words in a prompt, message list or input list."""
    if isinstance(value, str):
        return len(value.split()) if len(value) < 4096 else _long_text_words(value)
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return 0


def _images(messages: Any) -> list[str]:
    found = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                value = part.get("image_url")
                url = str(value.get("url") if isinstance(value, dict) else value)
                found.append(f"{url[:40]} ({len(url)})")
    return found


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@dataclass(frozen=True)
class Generation:
    """What one chat or completion request asked for."""

    chat: bool
    model: str
    prompt_tokens: int
    completion_tokens: int
    stream: bool
    include_usage: bool
    images: tuple[str, ...] = ()
    """Each image part's URL as received: its first 40 characters and its length."""

    @classmethod
    def read(cls, body: dict[str, Any], chat: bool, settings: Settings) -> Generation:
        asked = body.get("max_tokens", body.get("max_completion_tokens"))
        options = body.get("stream_options")
        return cls(
            chat=chat,
            model=str(body.get("model") or MODEL),
            prompt_tokens=max(1, _words(body.get("messages" if chat else "prompt"))),
            completion_tokens=asked if isinstance(asked, int) and asked > 0 else settings.tokens,
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            images=tuple(_images(body.get("messages"))) if chat else (),
        )

    def whole(self) -> bytes:
        text = " ".join(["word"] * self.completion_tokens)
        usage = _usage(self.prompt_tokens, self.completion_tokens)
        if self.chat:
            return _json(
                {
                    "id": "chatcmpl-responder",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": usage,
                    **({"images_seen": list(self.images)} if self.images else {}),
                }
            )
        return _json(
            {
                "id": "cmpl-responder",
                "object": "text_completion",
                "created": CREATED,
                "model": self.model,
                "choices": [
                    {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
                ],
                "usage": usage,
            }
        )

    @functools.lru_cache(maxsize=256)  # noqa: B019 - a few values, for the process's life
    def chunks(self, count: int) -> tuple[bytes, ...]:
        """The stream's events (``data: …\\n\\n``, ``[DONE]`` last), each
        framed as one chunk of the chunked encoding."""
        kind, ident = (
            ("chat.completion.chunk", "chatcmpl-responder")
            if self.chat
            else ("text_completion", "cmpl-responder")
        )
        # Only the choice differs between events: the rest is encoded once.
        head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":' % (
            ident.encode(),
            kind.encode(),
            CREATED,
            _json(self.model),
        )
        out = []
        for i in range(count):
            last = i == count - 1
            text = "word" if i == 0 else " word"
            if self.chat:
                delta = {"content": text} if i else {"role": "assistant", "content": text}
                choice: dict[str, Any] = {"index": 0, "delta": delta}
            else:
                choice = {"index": 0, "text": text, "logprobs": None}
            choice["finish_reason"] = "length" if last else None
            out.append(head + b"[" + _json(choice) + b"]}\n\n")
        if self.include_usage:
            usage = _usage(self.prompt_tokens, self.completion_tokens)
            out.append(head + b'[],"usage":' + _json(usage) + b"}\n\n")
        out.append(_DONE)
        return tuple(_chunk(event) for event in out)


def _embeddings(body: dict[str, Any]) -> bytes:
    given = body.get("input")
    inputs = given if isinstance(given, list) else [given]
    if not inputs or any(i is None for i in inputs):
        raise BadRequest("'input' is required", "missing_input")
    tokens = max(1, sum(len(i) if isinstance(i, list) else _words(i) for i in inputs))
    return _json(
        {
            "object": "list",
            "model": str(body.get("model") or MODEL),
            "data": [
                {"object": "embedding", "index": i, "embedding": EMBEDDING}
                for i in range(len(inputs))
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _rerank(body: dict[str, Any]) -> bytes:
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list):
        raise BadRequest("'query' (a string) and 'documents' (a list) are required")
    texts = [d.get("text", "") if isinstance(d, dict) else str(d) for d in documents]
    wanted = set(query.lower().split())

    def score(text: str) -> float:
        found = wanted & set(text.lower().split())
        return round(len(found) / max(1, len(wanted)), 6)

    ranked = sorted(
        ({"index": i, "relevance_score": score(t)} for i, t in enumerate(texts)),
        key=lambda r: -r["relevance_score"],  # stable: ties keep the documents' order
    )
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n >= 0:
        ranked = ranked[:top_n]
    tokens = max(1, _words(query) + sum(_words(t) for t in texts))
    return _json(
        {
            "model": str(body.get("model") or MODEL),
            "object": "list",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "results": ranked,
        }
    )


_MODELS = _json(
    {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "responder"}],
    }
)
_HEALTH = _json({"status": "ok"})


# --- the connection ----------------------------------------------------------


class Connection(asyncio.Protocol):
    """One client connection: parses requests, writes answers."""

    def __init__(self, settings: Settings, stats: Stats, live: set[Connection]) -> None:
        self._settings = settings
        self._stats = stats
        self._live = live
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._stream: asyncio.Task[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._live.discard(self)
        if self._stream is not None and not self._stream.done():
            self._stream.cancel()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        path = self._url.partition(b"?")[0]
        keep_alive = self._parser.should_keep_alive()
        if method == b"POST" and path in _POSTS:
            self._infer(_POSTS[path], keep_alive)
            return
        if method == b"GET" and path in _GETS:
            body = _GETS[path](self._stats)
            self._write(_response(200, body, keep_alive), keep_alive)
            return
        known = path in _POSTS or path in _GETS
        status, body = (
            _error(405, "method not allowed", "method_not_allowed")
            if known
            else _error(404, f"no route {path.decode(errors='replace')}", "not_found")
        )
        self._write(_response(status, body, keep_alive), keep_alive)

    # answering

    def _infer(self, handler: Handler, keep_alive: bool) -> None:
        stats = self._stats
        stats.in_progress += 1
        answer = self._answer(handler)
        if isinstance(answer, Generation):
            self._start_stream(answer, keep_alive)
            return
        status, content = answer
        stats.in_progress -= 1
        stats.served += 1
        self._write(_response(status, content, keep_alive), keep_alive)

    def _answer(self, handler: Handler) -> Answer:
        try:
            body = json.loads(b"".join(self._body))
        except ValueError:  # UnicodeDecodeError too
            return _error(400, "the body is not valid JSON", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "invalid_json")
        try:
            return handler(body, self._settings)
        except BadRequest as e:
            return _error(400, str(e), e.code)
        except Exception as e:  # a bug here: answer, and say why on stderr
            traceback.print_exc()
            return _error(500, f"{type(e).__name__}: {e}", "internal_error")

    def _start_stream(self, generation: Generation, keep_alive: bool) -> None:
        settings = self._settings
        count = settings.stream_events or generation.completion_tokens
        chunks = generation.chunks(count)
        if not settings.first_delay and not settings.event_delay:
            self._write(_STREAM_HEAD, True)
            for chunk in chunks:
                self._write(chunk, True)
            self._end_stream(keep_alive)
            return
        # Referenced here, and the connection in the server's set: not collected.
        self._stream = asyncio.get_running_loop().create_task(self._paced(chunks, keep_alive))

    async def _paced(self, chunks: tuple[bytes, ...], keep_alive: bool) -> None:
        settings = self._settings
        try:
            self._write(_STREAM_HEAD, True)
            await asyncio.sleep(settings.first_delay)
            for i, chunk in enumerate(chunks):
                if i and settings.event_delay:
                    await asyncio.sleep(settings.event_delay)
                self._write(chunk, True)
        except asyncio.CancelledError:
            self._stats.in_progress -= 1
            self._stats.cancelled += 1
            raise
        self._end_stream(keep_alive)

    def _end_stream(self, keep_alive: bool) -> None:
        self._stats.in_progress -= 1
        self._stats.served += 1
        self._write(_LAST_CHUNK, keep_alive)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(data)
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def shut(self) -> asyncio.Task[None] | None:
        """Close the connection (a stream on it ends as cancelled); its stream's task."""
        self._close()
        return self._stream


Answer = tuple[int, bytes] | Generation
Handler = Callable[[dict[str, Any], Settings], Answer]


def _chat(body: dict[str, Any], settings: Settings) -> Answer:
    generation = Generation.read(body, True, settings)
    return generation if generation.stream else (200, generation.whole())


def _completion(body: dict[str, Any], settings: Settings) -> Answer:
    generation = Generation.read(body, False, settings)
    return generation if generation.stream else (200, generation.whole())


_POSTS: dict[bytes, Handler] = {
    b"/v1/chat/completions": _chat,
    b"/v1/completions": _completion,
    b"/v1/embeddings": lambda body, _: (200, _embeddings(body)),
    b"/v1/rerank": lambda body, _: (200, _rerank(body)),
    b"/rerank": lambda body, _: (200, _rerank(body)),
}
_GETS: dict[bytes, Callable[[Stats], bytes]] = {
    b"/health": lambda _: _HEALTH,
    b"/v1/models": lambda _: _MODELS,
    b"/stats": lambda s: _json(
        {"in_progress": s.in_progress, "served": s.served, "cancelled": s.cancelled}
    ),
}


# --- the process -------------------------------------------------------------


async def serve(host: str, port: int, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    live: set[Connection] = set()
    server = await loop.create_server(
        lambda: Connection(settings, stats, live), host, port, backlog=4096
    )
    bound = server.sockets[0].getsockname()
    print(f"responder listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
        server.close()
        # Idle keep-alive connections too: a server waits for them on closing.
        streams = [task for c in list(live) if (task := c.shut()) is not None]
        await asyncio.gather(*streams, return_exceptions=True)


@dataclass
class RunningResponder:
    url: str
    """``http://127.0.0.1:PORT``, without ``/v1``."""
    process: subprocess.Popen[str]


@contextmanager
def run_responder(*options: str, timeout: float = 15) -> Iterator[RunningResponder]:
    """Start ``python -m tests.responder --port 0 OPTIONS…`` for a block, and
    check that it stops cleanly on SIGTERM afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.responder", "--port", "0", *options],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("responder listening on "):
            raise RuntimeError(f"the responder did not start (exit {process.poll()}): {line!r}")
        yield RunningResponder(line.split()[-1], process)
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise RuntimeError("the responder did not stop within 10 s of SIGTERM") from None
        if process.stdout is not None:
            process.stdout.close()
    assert code == 0, f"the responder exited with {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.responder", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens by default")
    parser.add_argument("--stream-events", type=int, default=None, metavar="K")
    parser.add_argument("--first-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--event-delay", type=float, default=0.0, metavar="S")
    args = parser.parse_args(argv)
    settings = Settings(args.tokens, args.stream_events, args.first_delay, args.event_delay)
    if uvloop is None:
        asyncio.run(serve(args.host, args.port, settings))
    else:
        uvloop.run(serve(args.host, args.port, settings))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
