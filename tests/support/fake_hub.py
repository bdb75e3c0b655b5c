"""A small stand-in for the Hugging Face Hub, for the real ``huggingface_hub`` client over real sockets.

Two HTTP servers on 127.0.0.1, like the Hub and its CDN:

* hub, reading files: ``HEAD|GET /{org}/{name}/resolve/{revision}/{path}``: 404 with ``X-Error-Code``
  RepoNotFound, RevisionNotFound or EntryNotFound, else ``302`` to the CDN with the headers
  ``hf_hub_download`` reads (``X-Repo-Commit``, ``X-Linked-Etag`` = the sha256, ``X-Linked-Size``);
* hub, the repository API the client's upload and listing calls use: ``POST /api/repos/create``,
  ``GET /api/models/{repo}[/revision/{rev}]`` (model_info, with ``blobs``), ``GET
  /api/models/{repo}/tree/{rev}`` (list_repo_tree, snapshot_download), ``POST
  /api/models/{repo}/preupload/{rev}``, the LFS batch API ``POST /{repo}.git/info/lfs/objects/batch``
  (no upload action for an object the repository already stores, as the real one), the object upload
  ``PUT /lfs-objects/{repo}/{oid}`` and its verify call, and ``POST /api/models/{repo}/commit/{rev}``
  (NDJSON: header with parentCommit, file, lfsFile, deletedFile);
* cdn ``HEAD|GET /cdn/{org}/{name}/{commit}/{path}``: the bytes, with ``Range: bytes=N-`` (206).

Files named like weights (``.safetensors``, ``.onnx``, ...) or of 10 MB and more are LFS files; the
rest are regular git files. With ``token`` set, writes and private repositories need
``Authorization: Bearer <token>``.

Failure injection: ``inject(path, ...)`` on CDN GETs of a file: ``"500"`` answers 500; ``("drop", n)``
sends the headers of the full answer, ``n`` bytes of body, then closes the connection.
``inject_resolve(path, "503", ...)`` answers the hub's resolve requests of a file with that status;
``inject_api(kind, "500", ...)`` the API requests of a kind (``commit``, ``preupload``, ...).
Every request is recorded. Use HF_ENDPOINT=<hub.endpoint> and HF_HUB_DISABLE_XET=1 in the client's
environment. ``SilentServer`` and ``refusing_endpoint`` stand for a Hub that hangs or is not there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<commit>[0-9a-f]{40})/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-$")
_API = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)"
    r"(?:/(?P<kind>revision|tree|preupload|commit)/(?P<rev>[^/]+)(?:/(?P<path>.+))?)?$"
)
_LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/lfs-(?P<kind>objects|verify)/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})$")
_LFS_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
LFS_MIN_SIZE = 10 * 1000 * 1000
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"
)

Fault = str | tuple[str, int]


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def is_lfs(path: str, size: int) -> bool:
    return path.endswith(_LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def lfs_pointer(content: bytes) -> bytes:
    sha = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n".encode()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    server: str  # "hub" or "cdn"
    repo: str
    revision: str  # as requested (hub) or the commit served (cdn)
    path: str  # path of the file in the repo ("" for API calls about the whole repository)
    headers: dict[str, str]
    kind: str = "file"  # file, or the API call: create, info, tree, preupload, lfs-batch, lfs-upload, ...


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    private: bool = False


class ApiError(Exception):
    def __init__(self, status: int, code: str = "", message: str = "") -> None:
        super().__init__(message or code)
        self.status, self.code, self.message = status, code, message or code


class FakeHub:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self._repos: dict[str, _Repo] = defaultdict(_Repo)
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._resolve_faults: dict[str, deque[str]] = defaultdict(deque)
        self._api_faults: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.created: list[dict[str, Any]] = []  # create_repo payloads
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    # -- content ---------------------------------------------------------------------------------

    def commit(self, repo: str, files: dict[str, bytes], ref: str | None = "main") -> str:
        """Add a commit holding exactly ``files``; returns its 40-hex id (deterministic)."""
        with self._lock:
            return self._add_commit(repo, dict(files), ref)

    def _add_commit(self, repo: str, files: dict[str, bytes], ref: str | None) -> str:
        state = self._repos[repo]
        commit_id = hashlib.sha1(f"{repo}#{len(state.commits)}".encode()).hexdigest()
        state.commits[commit_id] = files
        if ref is not None:
            state.refs[ref] = commit_id
        return commit_id

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo`` at ``revision`` (what a commit made of it)."""
        with self._lock:
            state = self._repos[repo]
            return dict(state.commits[state.refs.get(revision, revision)])

    def head(self, repo: str) -> str | None:
        with self._lock:
            return self._repos[repo].refs.get("main") if repo in self._repos else None

    def is_private(self, repo: str) -> bool:
        with self._lock:
            return self._repos[repo].private

    def inject(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next CDN GETs of ``path`` (any repo), one per request."""
        with self._lock:
            self._faults[path].extend(faults)

    def inject_resolve(self, path: str, *statuses: str) -> None:
        """Answer the next hub resolve requests (HEAD or GET) of ``path`` with these HTTP statuses."""
        with self._lock:
            self._resolve_faults[path].extend(statuses)

    def inject_api(self, kind: str, *statuses: str) -> None:
        """Answer the next API requests of ``kind`` (commit, preupload, lfs-batch, ...) with these codes."""
        with self._lock:
            self._api_faults[kind].extend(statuses)

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

    def api_calls(self, kind: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind]

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

    # -- request handling: files -----------------------------------------------------------------

    def _record(
        self, handler: _Handler, server: str, repo: str, revision: str, path: str, kind: str = "file"
    ) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(
                RecordedRequest(handler.command, server, repo, revision, path, headers, kind)
            )

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
        path = urlsplit(handler.path).path
        match = _RESOLVE.match(path)
        if match is None:
            return self.handle_api(handler, path)
        repo, rev, path = match["repo"], unquote(match["rev"]), unquote(match["path"])
        self._record(handler, "hub", repo, rev, path)
        with self._lock:
            queue = self._resolve_faults.get(path)
            status = queue.popleft() if queue else None
        if status is not None:
            return handler.reply(int(status))
        if not self._may_read(handler, repo):
            return handler.reply(401, {"X-Error-Code": "RepoNotFound"})
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

    # -- request handling: the repository API ----------------------------------------------------

    def _authorized(self, handler: _Handler) -> bool:
        return self.token is None or handler.headers.get("Authorization") == f"Bearer {self.token}"

    def _may_read(self, handler: _Handler, repo: str) -> bool:
        with self._lock:
            private = repo in self._repos and self._repos[repo].private
        return not private or self._authorized(handler)

    def handle_api(self, handler: _Handler, path: str) -> None:
        try:
            kind, answer = self._route(handler, path)
        except ApiError as exc:
            headers = {"X-Error-Code": exc.code} if exc.code else {}
            return handler.reply_json(exc.status, {"error": exc.message}, headers)
        return handler.reply_json(200, answer, {"X-Repo-Kind": kind})

    def _route(self, handler: _Handler, path: str) -> tuple[str, Any]:
        if path == "/api/repos/create" and handler.command == "POST":
            return self._api("create", handler, "", self._create)
        match = _API.match(path)
        if match is not None:
            repo, rev = match["repo"], unquote(match["rev"] or "main")
            kind = {None: "info", "revision": "info"}.get(match["kind"], match["kind"])
            if kind in ("info", "tree") and handler.command == "GET":
                return self._api(kind, handler, repo, lambda h, r: self._read(kind, h, r, rev, match["path"]))
            if kind == "preupload" and handler.command == "POST":
                return self._api(kind, handler, repo, lambda h, r: self._preupload(h, r, rev))
            if kind == "commit" and handler.command == "POST":
                return self._api(kind, handler, repo, lambda h, r: self._commit(h, r, rev))
        match = _LFS_BATCH.match(path)
        if match is not None and handler.command == "POST":
            return self._api("lfs-batch", handler, match["repo"], self._lfs_batch)
        match = _LFS_OBJECT.match(path)
        if match is not None:
            oid = match["oid"]
            if match["kind"] == "objects" and handler.command == "PUT":
                return self._api("lfs-upload", handler, match["repo"], lambda h, r: self._lfs_put(h, r, oid))
            if match["kind"] == "verify" and handler.command == "POST":
                return self._api("lfs-verify", handler, match["repo"], lambda h, r: self._lfs_verify(r, oid))
        raise ApiError(404, "RepoNotFound", f"no route {handler.command} {path}")

    def _api(self, kind: str, handler: _Handler, repo: str, answer: Any) -> tuple[str, Any]:
        self._record(handler, "hub", repo, "", "", kind)
        with self._lock:
            queue = self._api_faults.get(kind)
            status = queue.popleft() if queue else None
        if status is not None:
            handler.read_body()
            raise ApiError(int(status), message=f"injected {status}")
        # lfs-upload stands for the pre-signed storage URL the batch API hands out: no token there.
        if kind not in ("info", "tree", "lfs-upload") and not self._authorized(handler):
            raise ApiError(401, message="Invalid credentials in Authorization header")
        return kind, answer(handler, repo)

    def _existing(self, handler: _Handler, repo: str) -> _Repo:
        with self._lock:
            state = self._repos.get(repo)
        if state is None or not self._may_read(handler, repo):
            raise ApiError(404 if state is None else 401, "RepoNotFound", f"Repository {repo} not found")
        return state

    def _create(self, handler: _Handler, _: str) -> dict[str, Any]:
        payload = json.loads(handler.read_body())
        repo = f"{payload['organization']}/{payload['name']}"
        with self._lock:
            self.created.append(payload)
            if repo in self._repos:
                raise ApiError(409, message="You already created this model repo")
            self._repos[repo].private = payload.get("visibility") == "private"
            self._add_commit(repo, {".gitattributes": GITATTRIBUTES}, "main")
        return {"url": f"{self.endpoint}/{repo}", "name": repo}

    def _sibling(self, path: str, content: bytes) -> dict[str, Any]:
        if not is_lfs(path, len(content)):
            return {"rfilename": path, "size": len(content), "blobId": git_blob_id(content)}
        pointer = lfs_pointer(content)
        lfs = {
            "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content),
            "pointerSize": len(pointer),
        }
        return {"rfilename": path, "size": len(content), "blobId": git_blob_id(pointer), "lfs": lfs}

    def _read(self, kind: str, handler: _Handler, repo: str, rev: str, sub: str | None) -> Any:
        state = self._existing(handler, repo)
        commit_id, error = self._resolve(repo, rev)
        if commit_id is None:
            raise ApiError(404, error or "RevisionNotFound", f"Invalid rev id: {rev}")
        files = state.commits[commit_id]
        siblings = [self._sibling(path, content) for path, content in sorted(files.items())]
        if kind == "info":
            return {"id": repo, "sha": commit_id, "private": state.private, "siblings": siblings}
        prefix = f"{unquote(sub)}/" if sub else ""
        recursive = parse_qs(urlsplit(handler.path).query).get("recursive", ["False"])[0].lower() == "true"
        entries, folders = [], set()
        for sibling in siblings:
            path = sibling["rfilename"]
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": sibling["blobId"], "size": sibling["size"], "path": path}
                if "lfs" in sibling:
                    lfs = sibling["lfs"]
                    entry["lfs"] = {
                        "oid": lfs["sha256"],
                        "size": lfs["size"],
                        "pointerSize": lfs["pointerSize"],
                    }
                entries.append(entry)
        tree = [
            {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
            for p in sorted(folders)
        ]
        return tree + entries

    def _preupload(self, handler: _Handler, repo: str, rev: str) -> dict[str, Any]:
        state = self._existing(handler, repo)
        payload = json.loads(handler.read_body())
        commit_id, _ = self._resolve(repo, rev)
        current = state.commits.get(commit_id or "", {})
        answer = []
        for item in payload["files"]:
            mode = "lfs" if is_lfs(item["path"], item["size"]) else "regular"
            content = current.get(item["path"])
            oid = None
            if content is not None:
                oid = hashlib.sha256(content).hexdigest() if mode == "lfs" else git_blob_id(content)
            answer.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": answer}

    def _lfs_batch(self, handler: _Handler, repo: str) -> dict[str, Any]:
        state = self._existing(handler, repo)
        payload = json.loads(handler.read_body())
        objects = []
        for item in payload["objects"]:
            oid, size = item["oid"], item["size"]
            answer: dict[str, Any] = {"oid": oid, "size": size}
            with self._lock:
                stored = oid in state.lfs_objects
            if not stored:
                answer["actions"] = {
                    "upload": {"href": f"{self.endpoint}/lfs-objects/{repo}/{oid}"},
                    "verify": {"href": f"{self.endpoint}/lfs-verify/{repo}/{oid}"},
                }
            objects.append(answer)
        return {"transfer": "basic", "objects": objects}

    def _lfs_put(self, handler: _Handler, repo: str, oid: str) -> dict[str, Any]:
        with self._lock:
            state = self._repos.get(repo)
        if state is None:
            raise ApiError(404, message=f"no repository {repo}")
        body = handler.read_body()
        if hashlib.sha256(body).hexdigest() != oid:
            raise ApiError(400, message="the uploaded bytes do not match the oid")
        with self._lock:
            state.lfs_objects[oid] = body
        return {}

    def _lfs_verify(self, repo: str, oid: str) -> dict[str, Any]:
        with self._lock:
            if oid not in self._repos[repo].lfs_objects:
                raise ApiError(404, message=f"object {oid} not uploaded")
        return {}

    def _commit(self, handler: _Handler, repo: str, rev: str) -> dict[str, Any]:
        state = self._existing(handler, repo)
        lines = [json.loads(line) for line in handler.read_body().splitlines() if line.strip()]
        with self._lock:
            parent = state.refs.get(rev)
            header = next(line["value"] for line in lines if line["key"] == "header")
            if header.get("parentCommit") not in (None, parent):
                raise ApiError(
                    412, message=f"parent commit {header['parentCommit']} is not the head {parent}"
                )
            files = dict(state.commits[parent]) if parent else {}
            for line in lines:
                value = line["value"]
                if line["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    if value["oid"] not in state.lfs_objects:
                        raise ApiError(422, message=f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = state.lfs_objects[value["oid"]]
                elif line["key"] == "deletedFile" and files.pop(value["path"], None) is None:
                    raise ApiError(404, "EntryNotFound", f"{value['path']} does not exist")
            commit_id = self._add_commit(repo, files, rev)
        return {"commitUrl": f"{self.endpoint}/{repo}/commit/{commit_id}", "commitOid": commit_id}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _fake(self) -> FakeHub:
        return self.server.fake  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        self._body: bytes | None = None  # one handler serves every request of a kept-alive connection
        if self.server.role == "hub":  # type: ignore[attr-defined]
            self._fake().handle_hub(self)
        else:
            self._fake().handle_cdn(self)

    do_GET = _dispatch
    do_HEAD = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch

    def read_body(self) -> bytes:
        if self._body is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self._body = b"".join(parts)
        else:
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def reply_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self.read_body()  # a request body left unread would be taken for the next request
        self.reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode())

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


class SilentServer:
    """A Hub that hangs: accepts every connection and never answers. Counts the connections."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def connections(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        self._socket.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:
                continue
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._socket.close()


def refusing_endpoint() -> str:
    """An address where nothing listens: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
