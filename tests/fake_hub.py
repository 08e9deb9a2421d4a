"""A FAKE Hugging Face Hub for tests: a real HTTP server over loopback that
serves repos from a directory tree the way huggingface_hub 2.x reads them, and
records every request. Nothing in huggingface_hub is mocked; only the hub is
fake, since the real one cannot be reached from tests.

Layout: ``root/<org>/<name>/<revision>/<files…>``. Each revision directory is a
commit whose sha is ``sha1("<org>/<name>@<revision>")``, served under both its
name and its sha.

What huggingface_hub calls, and what the fake answers:

- ``GET /api/models/<repo>/revision/<rev>?blobs=true`` (``HfApi.model_info``
  with ``files_metadata=True``): ``id``, ``sha`` and ``siblings`` with
  ``rfilename``, ``size``, ``blobId`` and, for LFS files, ``lfs`` (``size``,
  ``sha256``, ``pointerSize``).
- ``HEAD /<repo>/resolve/<rev>/<file>`` (``hf_hub_download``'s metadata call):
  ``X-Repo-Commit``, ``ETag`` (git blob id, or sha256 for LFS files, as on the
  hub), ``Content-Length``, and ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS.
- ``GET`` of the same URL: the body, honouring ``Range``.
- Errors carry ``X-Error-Code`` as the hub's do (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``), which is how
  huggingface_hub picks its exception class.

A gated repo lists its files to anyone, like the hub, but serves them only to
``Authorization: Bearer <token>``: 401 without a token, 403 with another one.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth")
"""Stored with LFS, as the hub's default ``.gitattributes`` has it."""
CHUNK = 16 * 1024


def commit_sha(repo: str, revision: str) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    spec = "version https://git-lfs.github.com/spec/v1"
    return f"{spec}\noid sha256:{digest}\nsize {len(data)}\n".encode()


def hub_etag(name: str, data: bytes) -> str:
    """The ETag the hub gives a file, which is its blob name in the cache."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return git_blob_id(data)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None
    started: float
    finished: float
    range: str | None = None
    """The ``Range`` header: set for partial reads (a header read by an estimate)."""


@dataclass
class FakeHub:
    url: str
    root: Path
    gated: Mapping[str, str]
    chunk_delay: float = 0.0
    """Seconds to pause after each 16 KiB of a body: a slow link."""
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    """Requests being answered. A request is logged after its last byte is
    sent, so a client may be done before its request shows in ``requests``."""

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every request begun has been logged."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def body_gets(self, repo: str, name: str | None = None) -> list[Request]:
        """GETs of file bodies from ``repo`` (of ``name`` only, when given)."""
        self.settle()
        pattern = re.compile(rf"/{re.escape(repo)}/resolve/[^/]+/(.+)")
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and (m := pattern.fullmatch(r.path))
            and (name is None or unquote(m.group(1)) == name)
        ]

    def add_repo(self, repo: str, files: Mapping[str, bytes], revision: str = "main") -> Path:
        """Writes a revision of a repo; returns its directory."""
        directory = self.root / repo / revision
        for name, data in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return directory


def _siblings(directory: Path) -> list[dict[str, object]]:
    siblings: list[dict[str, object]] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        data = path.read_bytes()
        entry: dict[str, object] = {"rfilename": name, "size": len(data)}
        if name.endswith(LFS_SUFFIXES):
            pointer = lfs_pointer(data)
            entry["blobId"] = git_blob_id(pointer)
            entry["lfs"] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pointerSize": len(pointer),
            }
        else:
            entry["blobId"] = git_blob_id(data)
        siblings.append(entry)
    return siblings


@contextmanager
def serve_hub(root: Path, *, gated: Mapping[str, str] | None = None) -> Iterator[FakeHub]:
    """Serves the repos under ``root``; ``gated`` maps a repo id to the token it needs."""
    hub = FakeHub(url="", root=root, gated=dict(gated or {}))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._handle(body=True)

        def do_HEAD(self) -> None:
            self._handle(body=False)

        def _handle(self, *, body: bool) -> None:
            started = time.monotonic()
            with lock:
                hub.in_flight += 1
            try:
                self._route(body=body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with lock:
                    hub.requests.append(
                        Request(
                            self.command,
                            urlsplit(self.path).path,
                            self.headers.get("Authorization"),
                            started,
                            time.monotonic(),
                            self.headers.get("Range"),
                        )
                    )
                    hub.in_flight -= 1

        def _route(self, *, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                self._model_info(m.group(1), m.group(2) or "main")
            elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                self._resolve(m.group(1), m.group(2), m.group(3), body=body)
            else:
                self._error(404, "EntryNotFound", "no such endpoint")

        def _revision(self, repo: str, revision: str) -> tuple[str, Path] | None:
            """(revision name, directory), or None once an error has been sent."""
            if not (root / repo).is_dir():
                self._error(404, "RepoNotFound", f"Repository {repo} not found")
                return None
            for directory in sorted((root / repo).iterdir()):
                if revision in (directory.name, commit_sha(repo, directory.name)):
                    return directory.name, directory
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None

        def _model_info(self, repo: str, revision: str) -> None:
            found = self._revision(repo, revision)
            if found is None:
                return
            name, directory = found
            document = {
                "id": repo,
                "sha": commit_sha(repo, name),
                "gated": "manual" if repo in hub.gated else False,
                "siblings": _siblings(directory),
            }
            payload = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _resolve(self, repo: str, revision: str, name: str, *, body: bool) -> None:
            found = self._revision(repo, revision)
            if found is None:
                return
            revision_name, directory = found
            commit = commit_sha(repo, revision_name)
            if repo in hub.gated:
                sent = self.headers.get("Authorization")
                if sent is None:
                    self._error(401, "GatedRepo", f"Access to model {repo} is restricted.")
                    return
                if sent != f"Bearer {hub.gated[repo]}":
                    self._error(403, "GatedRepo", f"Access to model {repo} is restricted.")
                    return
            path = directory / name
            if not path.is_file():
                self._error(404, "EntryNotFound", f"{name} does not exist", commit=commit)
                return
            data = path.read_bytes()
            etag = hub_etag(name, data)
            start, end = 0, len(data) - 1
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if body and ranged:
                start = int(ranged.group(1))
                end = min(int(ranged.group(2) or end), end)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{etag}"')
            if name.endswith(LFS_SUFFIXES):
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if not body:
                return
            for offset in range(start, end + 1, CHUNK):
                self.wfile.write(data[offset : min(offset + CHUNK, end + 1)])
                self.wfile.flush()
                if hub.chunk_delay:
                    time.sleep(hub.chunk_delay)  # a slow link, not a wait for state

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            payload = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
