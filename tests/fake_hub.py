"""A stand-in for the Hugging Face Hub over real HTTP, for tests: it serves model repos the way
huggingface_hub 2.x reads them (no Xet) and records every request it gets.

Endpoints: ``GET /api/models/{repo}[/revision/{rev}]`` (info with the file list and sizes),
``GET /api/models/{repo}/tree/{rev}`` (the recursive file listing), ``HEAD``/``GET
/{repo}/resolve/{rev}/{file}`` (``X-Repo-Commit``, ``ETag``, ``Content-Length``; large files answer
302 to a CDN path on another host name with ``X-Linked-Etag`` / ``X-Linked-Size``, as the Hub does
for LFS files) and ``GET /cdn/{sha256}``. An unknown repo is a 404 ``RepoNotFound``; a gated repo
lists its files but answers 403 ``GatedRepo`` on downloads.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_FROM_BYTES = 1_000_000  # files at least this large are served like LFS files (redirected to a CDN)


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str
    gated: bool = False

    def meta(self, path: str) -> dict:
        data = self.files[path]
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_oid}
        if len(data) >= LFS_FROM_BYTES:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) in arrival order

    def add_repo(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> None:
        sha = hashlib.sha1(json.dumps([repo_id, sorted(files)]).encode()).hexdigest()
        self.repos[repo_id] = Repo(files, sha, gated)

    def add_directory(self, repo_id: str, directory: Path, extra: dict[str, bytes] | None = None) -> None:
        files = {
            str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
        }
        self.add_repo(repo_id, {**files, **(extra or {})})

    def downloads(self) -> list[str]:
        """The repo files whose bytes were sent (GET on /resolve or on the CDN), in order."""
        by_sha = {hashlib.sha256(d).hexdigest(): p for r in self.repos.values() for p, d in r.files.items()}
        names = []
        for method, path in self.requests:
            if method != "GET":
                continue
            if "/resolve/" in path:
                names.append(path.split("/resolve/", 1)[1].split("/", 1)[1])
            elif path.startswith("/cdn/"):
                names.append(by_sha[path.removeprefix("/cdn/")])
        return names

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- routing ---------------------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        if path.startswith("/cdn/"):
            data = next(
                (
                    d
                    for r in self.repos.values()
                    for d in r.files.values()
                    if hashlib.sha256(d).hexdigest() == path.removeprefix("/cdn/")
                ),
                None,
            )
            return (
                self._send(h, 200, data, {}, body) if data is not None else self._send(h, 404, b"", {}, body)
            )
        if path.startswith("/api/models/"):
            return self._api(h, path.removeprefix("/api/models/"), body)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(h, "/".join(parts[:2]), "/".join(parts[4:]), body)
        self._send(h, 404, b"", {}, body)

    def _repo(self, h, repo_id: str, body: bool) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._send(
                h,
                404,
                b'{"error": "Repository not found"}',
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                body,
            )
        return repo

    def _api(self, h, rest: str, body: bool) -> None:
        parts = rest.split("/")
        repo = self._repo(h, "/".join(parts[:2]), body)
        if repo is None:
            return
        if len(parts) >= 3 and parts[2] == "tree":
            listing = [repo.meta(p) for p in sorted(repo.files)]
            return self._send(
                h, 200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, body
            )
        siblings = [
            {"rfilename": p, "size": m["size"], "blobId": m["oid"]}
            for p in sorted(repo.files)
            for m in [repo.meta(p)]
        ]
        info = {
            "id": "/".join(parts[:2]),
            "sha": repo.sha,
            "siblings": siblings,
            "gated": "auto" if repo.gated else False,
        }
        self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def _resolve(self, h, repo_id: str, filename: str, body: bool) -> None:
        repo = self._repo(h, repo_id, body)
        if repo is None:
            return
        headers = {"X-Repo-Commit": repo.sha}
        if repo.gated:
            headers |= {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"}
            return self._send(h, 403, b"", headers, body)
        if filename not in repo.files:
            return self._send(h, 404, b"", headers | {"X-Error-Code": "EntryNotFound"}, body)
        meta = repo.meta(filename)
        if "lfs" in meta:  # the Hub redirects LFS files to a CDN host, with the blob's metadata on the 302
            sha256 = meta["lfs"]["oid"]
            headers |= {
                "Location": f"http://localhost:{self.port}/cdn/{sha256}",
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(meta["size"]),
                "ETag": f'"{meta["oid"]}"',
            }
            return self._send(h, 302, b"", headers, body)
        self._send(h, 200, repo.files[filename], headers | {"ETag": f'"{meta["oid"]}"'}, body)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], body: bool
    ) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
