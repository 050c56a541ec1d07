"""``dmlopt dashboard``: optuna-dashboard, read-only unless asked, limited to one study if asked.

optuna-dashboard's UI can delete, rename and create studies and write trials; a comparison whose
searches are "one search, one setting" must not be edited from a browser, so every request that
is not a read is refused unless ``writable``. ``--study`` hides every other study, in the list
and by id.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

READS = ("GET", "HEAD", "OPTIONS")
# every route that names a study by its id
STUDY_ID_ROUTE = re.compile(r"^/(?:api/studies|csv|artifacts|api/artifacts)/(\d+)(?:/|$)")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])  # fmt: skip
    return [data]


class Guard:
    """WSGI middleware: refuse writes unless ``writable``; show only the studies of ``study``."""

    def __init__(
        self, app: WSGIApp, storage: optuna.storages.BaseStorage, *,
        writable: bool = False, study: str | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.storage = storage
        self.writable = writable
        self.prefix = None if study is None else f"{study}/"

    def visible(self, name: str) -> bool:
        return self.prefix is None or name.startswith(self.prefix) or name == self.prefix[:-1]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "").rstrip("/")
        if method not in READS and not self.writable:
            return _json(start_response, "403 Forbidden",
                         {"reason": "this dashboard is read-only (dmlopt dashboard --writable "
                                    "allows changes)"})  # fmt: skip
        found = STUDY_ID_ROUTE.match(path)
        if self.prefix is not None and found:
            try:
                name = self.storage.get_study_name_from_id(int(found.group(1)))
            except KeyError:
                name = ""
            if not self.visible(name):
                return _json(start_response, "404 Not Found", {"reason": "no such study"})
        if self.prefix is not None and path == "/api/studies" and method == "GET":
            return self._filtered_list(environ, start_response)
        return self.app(environ, start_response)

    def _filtered_list(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *rest: Any) -> None:
            captured.update(status=status, headers=headers)

        body = b"".join(self.app(environ, capture))
        if not captured.get("status", "").startswith("200"):
            start_response(captured["status"], captured["headers"])
            return [body]
        data = json.loads(body)
        data["study_summaries"] = [
            s for s in data.get("study_summaries", []) if self.visible(s["study_name"])
        ]
        return _json(start_response, "200 OK", data)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: the terminal shows where to point the browser, nothing else."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_dashboard(
    storage: optuna.storages.BaseStorage, *, artifact_dir: str | None, writable: bool,
    study: str | None,
) -> WSGIApp:  # fmt: skip
    """The optuna-dashboard WSGI app behind :class:`Guard`."""
    from optuna_dashboard import wsgi

    store = None
    if artifact_dir is not None:
        store = optuna.artifacts.FileSystemArtifactStore(artifact_dir)
    return Guard(wsgi(storage, artifact_store=store), storage, writable=writable, study=study)


def serve(app: WSGIApp, host: str, port: int) -> None:
    """Serve until interrupted."""
    server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
    with server:
        server.serve_forever()
