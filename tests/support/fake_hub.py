"""A small stand-in for the Hugging Face Hub's file endpoints, for the real ``huggingface_hub`` client.

Two HTTP servers on 127.0.0.1, like the Hub and its CDN:

* hub  ``HEAD|GET /{org}/{name}/resolve/{revision}/{path}``: 404 with ``X-Error-Code`` RepoNotFound,
  RevisionNotFound or EntryNotFound, else ``302`` to the CDN with the headers ``hf_hub_download`` reads
  (``X-Repo-Commit``, ``X-Linked-Etag`` = the sha256 of an LFS file, ``X-Linked-Size``, ``Location``);
* cdn  ``HEAD|GET /cdn/{org}/{name}/{commit}/{path}``: the bytes, with ``Range: bytes=N-`` (206).

Failure injection on CDN GETs of a path (``inject``): ``"500"`` answers 500; ``("drop", n)`` sends the
headers of the full answer, ``n`` bytes of body, then closes the connection. Every request is recorded.
Use HF_ENDPOINT=<hub.endpoint> and HF_HUB_DISABLE_XET=1 in the client's environment.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<commit>[0-9a-f]{40})/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-$")

Fault = str | tuple[str, int]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    server: str  # "hub" or "cdn"
    repo: str
    revision: str  # as requested (hub) or the commit served (cdn)
    path: str  # path of the file in the repo
    headers: dict[str, str]


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


class FakeHub:
    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = defaultdict(_Repo)
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    # -- content ---------------------------------------------------------------------------------

    def commit(self, repo: str, files: dict[str, bytes], ref: str | None = "main") -> str:
        """Add a commit holding exactly ``files``; returns its 40-hex id (deterministic)."""
        with self._lock:
            state = self._repos[repo]
            commit_id = hashlib.sha1(f"{repo}#{len(state.commits)}".encode()).hexdigest()
            state.commits[commit_id] = dict(files)
            if ref is not None:
                state.refs[ref] = commit_id
        return commit_id

    def inject(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next CDN GETs of ``path`` (any repo), one per request."""
        with self._lock:
            self._faults[path].extend(faults)

    # -- observation -----------------------------------------------------------------------------

    def requests_for(
        self, path: str, method: str | None = None, server: str | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path
                and (method is None or r.method == method)
                and (server is None or r.server == server)
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- servers ---------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._url("hub")

    def _url(self, name: str) -> str:
        host, port = self._servers[name].server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        for name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.fake = self  # type: ignore[attr-defined]
            server.role = name  # type: ignore[attr-defined]
            self._servers[name] = server
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- request handling ------------------------------------------------------------------------

    def _record(self, handler: _Handler, server: str, repo: str, revision: str, path: str) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(RecordedRequest(handler.command, server, repo, revision, path, headers))

    def _resolve(self, repo: str, rev: str) -> tuple[str | None, str | None]:
        """(commit, error code)."""
        with self._lock:
            if repo not in self._repos:
                return None, "RepoNotFound"
            state = self._repos[repo]
            commit_id = state.refs.get(rev, rev)
            if commit_id not in state.commits:
                return None, "RevisionNotFound"
            return commit_id, None

    def _content(self, repo: str, commit_id: str, path: str) -> bytes | None:
        with self._lock:
            return self._repos[repo].commits[commit_id].get(path)

    def handle_hub(self, handler: _Handler) -> None:
        match = _RESOLVE.match(urlsplit(handler.path).path)
        if match is None:
            return handler.reply(404, {"X-Error-Code": "RepoNotFound"})
        repo, rev, path = match["repo"], unquote(match["rev"]), unquote(match["path"])
        self._record(handler, "hub", repo, rev, path)
        commit_id, error = self._resolve(repo, rev)
        if commit_id is None:
            return handler.reply(404, {"X-Error-Code": error or "RepoNotFound"})
        content = self._content(repo, commit_id, path)
        if content is None:
            return handler.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit_id})
        sha = hashlib.sha256(content).hexdigest()
        return handler.reply(
            302,
            {
                "Location": f"{self._url('cdn')}/cdn/{repo}/{commit_id}/{quote(path)}",
                "X-Repo-Commit": commit_id,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(content)),
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
            },
        )

    def handle_cdn(self, handler: _Handler) -> None:
        match = _CDN.match(urlsplit(handler.path).path)
        if match is None:
            return handler.reply(404)
        repo, commit_id, path = match["repo"], match["commit"], unquote(match["path"])
        self._record(handler, "cdn", repo, commit_id, path)
        content = self._content(repo, commit_id, path) if repo in self._repos else None
        if content is None:
            return handler.reply(404)
        fault: Fault | None = None
        if handler.command == "GET":
            with self._lock:
                queue = self._faults.get(path)
                fault = queue.popleft() if queue else None
        if fault == "500":
            return handler.reply(500)
        start, status, headers = 0, 200, {"Accept-Ranges": "bytes"}
        range_match = _RANGE.match(handler.headers.get("Range", ""))
        if range_match is not None and int(range_match["start"]) < len(content):
            start, status = int(range_match["start"]), 206
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        body = content[start:]
        if isinstance(fault, tuple) and fault[0] == "drop":
            return handler.reply(status, headers, body, send_only=fault[1])
        return handler.reply(status, headers, body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _fake(self) -> FakeHub:
        return self.server.fake  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        if self.server.role == "hub":  # type: ignore[attr-defined]
            self._fake().handle_hub(self)
        else:
            self._fake().handle_cdn(self)

    do_GET = _dispatch
    do_HEAD = _dispatch

    def reply(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        send_only: int | None = None,
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if send_only is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.write(body if send_only is None else body[:send_only])
        self.wfile.flush()
        if send_only is not None:
            self.close_connection = True  # the client sees a body shorter than Content-Length
