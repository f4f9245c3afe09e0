"""A small HTTP prediction service over :class:`codec.split.ServerDecoder` (standard library only).

Endpoints:

- ``POST /predict`` — body: one splitcodec bitstream (``Content-Length`` required, at most
  ``max_bytes``; checked *before* the body is read). 200 → ``{"top1", "index", "topk":
  [[label, prob], …], "model"}``; a bad bitstream (garbage, truncated, corrupt, another codec,
  another edge model, absurd size) → 400 ``{"error": message}``; too large → 413; no length → 411.
- ``GET /health`` → 200 ``{"status": "ok", "model": edge hash, "classes": n}``.

Every request is answered on its own thread (``ThreadingHTTPServer``); a bad request never stops
the server. :func:`predict_remote` is the matching client.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

from bitstream import BitstreamError

from .split import ServerDecoder

DEFAULT_MAX_BYTES = 1 << 20
_DRAIN_LIMIT = 64 << 20  # a refused body is read and dropped up to this many bytes, then the socket closes


class RemoteError(RuntimeError):
    """The service answered with an error status; ``status`` and ``message`` say which."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


def _handler(decoder: ServerDecoder, max_bytes: int, quiet: bool):
    class Handler(BaseHTTPRequestHandler):
        server_version = "splitcodec/1"
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, close: bool = False) -> None:
            if close:  # the unread body would otherwise be taken for the next request
                self.close_connection = True
            self._reply(status, {"error": message})

        def _discard(self, n: int) -> None:
            """Read and drop (never keep) a refused body, so a client still sending it gets our answer
            instead of a reset connection; bounded in bytes and time."""
            left = min(n, _DRAIN_LIMIT)
            try:
                self.connection.settimeout(2.0)
                while left > 0:
                    piece = self.rfile.read(min(left, 1 << 16))
                    if not piece:
                        break
                    left -= len(piece)
            except OSError:
                pass

        def do_GET(self):
            if self.path.split("?")[0] == "/health":
                self._reply(200, {"status": "ok", "model": decoder.model_hash.hex(),
                                  "classes": len(decoder.model.class_names)})
            else:
                self._error(404, f"no such endpoint: {self.path}")

        def do_POST(self):
            if self.path.split("?")[0] != "/predict":
                self._error(404, f"no such endpoint: {self.path}", close=True)
                return
            raw = self.headers.get("Content-Length")
            if raw is None:
                self._error(411, "Content-Length required", close=True)
                return
            try:
                n = int(raw)
                if n < 0:
                    raise ValueError
            except ValueError:
                self._error(400, f"bad Content-Length {raw!r}", close=True)
                return
            if n > max_bytes:
                self._error(413, f"body of {n} bytes exceeds the limit of {max_bytes}", close=True)
                self._discard(n)
                return
            data = self.rfile.read(n)
            if len(data) != n:
                self._error(400, f"body ended after {len(data)} of {n} bytes", close=True)
                return
            try:
                res = decoder.decode(data, name="request")
            except BitstreamError as err:
                self._error(400, str(err))
                return
            except Exception as err:  # a bug, not the client's fault; keep serving
                self.log_error("internal error: %r", err)
                self._error(500, f"internal error: {type(err).__name__}")
                return
            self._reply(200, {"top1": res["top1"], "index": res["index"],
                              "topk": [[label, p] for label, p in res["topk"]], "model": res["model"]})

        def log_message(self, fmt, *args):
            if not quiet:
                super().log_message(fmt, *args)

    return Handler


def make_server(decoder: ServerDecoder, host: str = "127.0.0.1", port: int = 8000,
                max_bytes: int = DEFAULT_MAX_BYTES, *, quiet: bool = False) -> ThreadingHTTPServer:
    """A bound, not yet running server (``server.server_address`` has the real port for port 0)."""
    server = ThreadingHTTPServer((host, port), _handler(decoder, int(max_bytes), quiet))
    server.daemon_threads = True
    return server


def serve(decoder: ServerDecoder, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = DEFAULT_MAX_BYTES,
          *, background: bool = False, quiet: bool = False) -> ThreadingHTTPServer:
    """Serve predictions. Blocks until interrupted, or with ``background=True`` runs on a daemon
    thread and returns the server at once (stop it with ``server.shutdown(); server.server_close()``)."""
    server = make_server(decoder, host, port, max_bytes, quiet=quiet)
    if background:
        threading.Thread(target=server.serve_forever, name="splitcodec-serve", daemon=True).start()
        return server
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return server


def _predict_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/predict")
    return urlunsplit(parts)


def predict_remote(url: str, data: bytes, timeout: float = 30.0) -> dict:
    """POST a bitstream to a running service (``http://host:port`` or ``…/predict``) and return its
    JSON answer; an error status raises :class:`RemoteError` with the server's message."""
    req = urllib.request.Request(_predict_url(url), data=bytes(data), method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            message = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace")
        raise RemoteError(err.code, message or err.reason) from None
