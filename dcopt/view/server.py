"""The local web server of ``dcopt view``: the page, its bundled assets, and a small JSON API.

Bound to 127.0.0.1 only (the API runs passes and writes nothing outside what the user asks to
download). Requests are served from threads; the session serializes edits with its lock.

    GET  /                          the page
    GET  /static/PATH               bundled assets (cytoscape.js, dagre, the app)
    GET  /api/session               stages, edits, passes and patches known
    GET  /api/stage?i=N             stage N: graph elements, changes, pass records
    GET  /api/node?i=N&id=ID        one node's details
    GET  /api/candidates?i=N&id=ID  passes/patches that apply at the node, near misses
    POST /api/preview|apply         {"after": N, "kind": "pass"|"patch", "spec": NAME_OR_URI,
                                     "params": {NAME: TEXT}}  (a patch's parameters, a pass's options)
    POST /api/undo|redo
    GET  /api/records               this model's builds and recorded runs (the panel's pickers)
    GET  /api/build?ref=REF         a build: manifest, passes, steps with kernel source and nodes
    GET  /api/run?ref=REF           a recorded run: what ran, metrics, latency charts' data
    GET  /api/export/pipeline       the step list as a pipeline file (dcopt opt --pipeline)
    GET  /api/export/model?format=onnx|json   the graph after the last step
    GET  /api/export/html           this session as one self-contained HTML file
"""

from __future__ import annotations

import json
import mimetypes
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from dcopt.errors import DcoptError
from dcopt.view.api import ViewerAPI
from dcopt.view.page import STATIC, live_page, static_page


class _Handler(BaseHTTPRequestHandler):
    api: ViewerAPI  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 (the base class's name) -- quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, filename: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if filename:
            self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if method == "GET":
                self._get(url.path, query)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                self._post(url.path, body)
        except DcoptError as exc:
            self._json({"error": str(exc)}, 400)
        except (KeyError, ValueError, TypeError) as exc:
            self._json({"error": f"bad request: {type(exc).__name__}: {exc}"}, 400)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def _get(self, path: str, q: dict) -> None:
        api = self.api
        if path in ("/", "/index.html"):
            self._send(200, live_page(api.session.name).encode(), "text/html; charset=utf-8")
        elif path.startswith("/static/"):
            file = (STATIC / path[len("/static/"):]).resolve()
            if STATIC.resolve() not in file.parents or not file.is_file():
                self._json({"error": f"no asset {path}"}, 404)
                return
            self._send(200, file.read_bytes(), mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        elif path == "/api/session":
            self._json(api.overview())
        elif path == "/api/stage":
            self._json(api.stage(int(q["i"])))
        elif path == "/api/node":
            self._json(api.node(int(q["i"]), q["id"]))
        elif path == "/api/candidates":
            self._json(api.node_candidates(int(q["i"]), q["id"]))
        elif path == "/api/records":
            self._json(api.builds_and_runs())
        elif path == "/api/build":
            self._json(api.build(q["ref"]))
        elif path == "/api/run":
            self._json(api.run(q["ref"]))
        elif path == "/api/export/pipeline":
            name = Path(api.session.model).stem + "_pipeline.py"
            self._send(200, api.pipeline_file().encode(), "text/x-python; charset=utf-8", name)
        elif path == "/api/export/model":
            self._export_model(q.get("format", "onnx"))
        elif path == "/api/export/html":
            name = Path(api.session.model).stem + "_view.html"
            self._send(200, static_page(api).encode(), "text/html; charset=utf-8", name)
        else:
            self._json({"error": f"no such endpoint {path}"}, 404)

    def _export_model(self, fmt: str) -> None:
        from dcopt import api as dcopt_api

        if fmt not in ("onnx", "json"):
            raise DcoptError(f"format must be onnx or json, got {fmt!r}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"model.{fmt}"
            with self.api.session.lock:
                dcopt_api.save_graph(self.api.session.final, str(path))
            body = path.read_bytes()
        name = f"{Path(self.api.session.model).stem}_edited.{fmt}"
        self._send(200, body, "application/octet-stream" if fmt == "onnx" else "application/json", name)

    def _post(self, path: str, body: dict) -> None:
        api = self.api
        if path == "/api/preview":
            self._json(api.preview(int(body["after"]), body["kind"], body["spec"], body.get("params")))
        elif path == "/api/apply":
            self._json(api.apply(int(body["after"]), body["kind"], body["spec"], body.get("params")))
        elif path == "/api/undo":
            self._json(api.undo())
        elif path == "/api/redo":
            self._json(api.redo())
        else:
            self._json({"error": f"no such endpoint {path}"}, 404)


class ViewServer:
    """The server on 127.0.0.1 at ``port`` (0: a free one); ``url`` once started."""

    def __init__(self, api: ViewerAPI, port: int = 0):
        handler = type("Handler", (_Handler,), {"api": api})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> "ViewServer":
        """Serve from a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
