"""An HTTP prediction service over :class:`codec.split.ServerDecoder`, served by waitress.

Endpoints:

- ``POST /predict`` — body: one splitcodec bitstream (``Content-Length`` or chunked, at most
  ``max_bytes``; a declared length is checked *before* the body is read). 200 → ``{"top1",
  "index", "topk": [[label, prob], …], "model"}``; a bad bitstream (garbage, truncated, corrupt,
  another codec, another edge model, absurd size) → 400 ``{"error": message}``; too large → 413;
  no length → 411. Every error answer is JSON ``{"error": message}``.
- ``GET /health`` → 200 ``{"status": "ok", "model": edge hash, "classes": n}``.

Why waitress (the optional extra ``serve``): the standard library's ``http.server`` gives every
connection a thread that blocks on reads with no timeout, so clients that declare a body and never
send it pile up threads and sockets without bound, and it writes a response's headers and body in
two ``send`` calls with Nagle's algorithm on, so each keep-alive request after the first waits for
the client's delayed ACK. waitress reads requests on one event loop and hands only *complete*
requests to a fixed pool of worker threads, so a slow client costs a socket and a small buffer,
never a thread; it closes idle connections (``channel_timeout``), caps open connections
(``connection_limit``), bounds header and body sizes before buffering them, and sets ``TCP_NODELAY``
on every connection, so a response's header and body segments leave at once. It is pure Python with
no dependencies of its own (no C build), WSGI, which fits our synchronous decoder, and maintained by
the Pylons project. cheroot reads each request on a pool thread, so stalled bodies would hold the
pool until their socket timeouts; uvicorn and hypercorn are ASGI servers with several dependencies
each, and would only add an event loop to hop off to run the decoder. On top of waitress this module
adds a whole-request deadline (a client trickling a byte a second is not idle, but is still closed),
JSON error bodies, and a bounded drain of refused bodies so that a client still sending one reads
our 413 instead of a reset connection.

:func:`predict_remote` is the matching client: standard library only, so an edge client imports
it with neither the ``serve`` nor the ``split`` extra (no torch).
"""
from __future__ import annotations

import functools
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from neural_codecs.bitstream import BitstreamError

DEFAULT_MAX_BYTES = 1 << 20
#: A connection that sends nothing for this many seconds (mid-request or between requests) is closed
#: (checked ten times per timeout, so it closes after 90-100 % of it).
DEFAULT_READ_TIMEOUT = 10.0
#: A request whose headers and body have not all arrived this many seconds after its first byte is
#: dropped, however steadily it trickles in.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Open connections at most; past it new ones wait in the kernel's listen queue until one closes.
#: Each costs one descriptor and at most ``_MAX_HEADER_BYTES`` + ``_INBUF_BYTES`` of memory.
DEFAULT_MAX_CONNECTIONS = 500
#: Worker threads that decode complete requests (slow clients never hold one).
DEFAULT_THREADS = 4

INSTALL_HINT = 'the HTTP service needs waitress; install it with: pip install "neural-codecs[serve]"'

_MAX_HEADER_BYTES = 16 << 10  # our API sends a handful of short headers
_INBUF_BYTES = 64 << 10  # a body beyond this is spooled to a temporary file, not kept in memory
_DRAIN_LIMIT = 64 << 20  # a refused body is read and dropped up to this many bytes, then the socket closes
_DRAIN_SECONDS = 2.0  # ... or after this long


class RemoteError(RuntimeError):
    """The service answered with an error status; ``status`` and ``message`` say which."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


class ServeUnavailable(RuntimeError):
    """The optional serving dependency (waitress) is not installed; the message says how to get it."""


# -- the application (plain WSGI; no server dependency) -------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
            413: "Content Too Large", 500: "Internal Server Error"}


def _json(start_response, status: int, doc: dict, extra=()) -> list[bytes]:
    body = json.dumps(doc).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra]
    start_response(f"{status} {_REASONS[status]}", headers)
    return [body]


def make_app(decoder, max_bytes: int = DEFAULT_MAX_BYTES, *, log=None):
    """The service as a WSGI application around ``decoder`` (a :class:`codec.split.ServerDecoder`).

    Kept apart from the server so the HTTP API is one small function any WSGI server can host.
    ``log``, if given, is called with one line per request.
    """
    max_bytes = int(max_bytes)
    health = {"status": "ok", "model": decoder.model_hash.hex(), "classes": len(decoder.model.class_names)}

    def predict(environ, start_response):
        raw = environ.get("CONTENT_LENGTH")
        if raw in (None, ""):
            return _json(start_response, 411, {"error": "Content-Length required"})
        n = int(raw)  # the server has checked it is a whole number and read exactly that many bytes
        if n > max_bytes:  # the server refuses these before reading them; this guards other hosts
            return _json(start_response, 413, {"error": f"body of {n} bytes exceeds the limit of {max_bytes}"})
        data = environ["wsgi.input"].read(n)
        if len(data) != n:
            return _json(start_response, 400, {"error": f"body ended after {len(data)} of {n} bytes"})
        try:
            res = decoder.decode(data, name="request")
        except BitstreamError as err:
            return _json(start_response, 400, {"error": str(err)})
        except Exception as err:  # a bug, not the client's fault; keep serving
            print(f"splitcodec serve: internal error: {err!r}", file=environ.get("wsgi.errors", sys.stderr))
            return _json(start_response, 500, {"error": f"internal error: {type(err).__name__}"})
        return _json(start_response, 200, {"top1": res["top1"], "index": res["index"],
                                           "topk": [[label, p] for label, p in res["topk"]], "model": res["model"]})

    def route(environ, start_response):
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        if path == "/health" and method == "GET":
            return _json(start_response, 200, health)
        if path == "/predict" and method == "POST":
            return predict(environ, start_response)
        if path in ("/health", "/predict"):
            allow = "GET" if path == "/health" else "POST"
            return _json(start_response, 405, {"error": f"{method} not allowed on {path}"}, extra=[("Allow", allow)])
        return _json(start_response, 404, {"error": f"no such endpoint: {path}"})

    if log is None:
        return route

    def logged(environ, start_response):
        t0, seen = time.perf_counter(), []

        def start(status, headers, exc_info=None):
            seen.append(status.split()[0])
            return start_response(status, headers, exc_info)

        out = route(environ, start)
        log(f'{environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD")} {environ.get("PATH_INFO")}" '
            f'{seen[0] if seen else "-"} {1e3 * (time.perf_counter() - t0):.1f} ms')
        return out

    return logged


# -- the server (waitress, with our limits) --------------------------------------------------------


@functools.cache
def _waitress_classes():
    """waitress's server, channel and error answer specialised for this service; imported on first
    use so that the module (and :func:`predict_remote`) works without the ``serve`` extra."""
    try:
        from waitress.adjustments import Adjustments
        from waitress.channel import HTTPChannel
        from waitress.server import TcpWSGIServer
        from waitress.task import ErrorTask
    except ImportError:
        raise ServeUnavailable(INSTALL_HINT) from None

    class Adj(Adjustments):
        """Timeouts in fractions of a second (waitress parses them as whole seconds)."""
        _param_map = {**Adjustments._param_map, "channel_timeout": float, "cleanup_interval": float}

    class JsonErrorTask(ErrorTask):
        """waitress's refusals (too large, bad Content-Length, oversized headers) as our JSON."""

        def execute(self):
            err, max_bytes = self.request.error, self.channel.server.max_bytes
            message = str(err.body)
            if err.code == 413:
                n = self.request.content_length
                message = (f"body of {n} bytes exceeds the limit of {max_bytes}" if n
                           else f"body exceeds the limit of {max_bytes} bytes")
            body = json.dumps({"error": message}).encode()
            self.status = f"{err.code} {err.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.channel.drain_refused = True  # the client may still be sending what we refused
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        """One connection. Adds the whole-request deadline's clock and, after a refusal, a bounded
        drain: the answer is sent, our side half-closed, and what the client still sends is read and
        dropped (at most ``_DRAIN_LIMIT`` bytes or ``_DRAIN_SECONDS``), so closing does not reset
        the connection under a client that has not finished sending and has not read our answer."""
        error_task_class = JsonErrorTask
        drain_refused = False
        drain_left = 0
        drain_until = 0.0
        request_started = 0.0
        _timed = None

        def received(self, data):
            done = super().received(data)
            if self.request is not None and self.request is not self._timed:
                self._timed, self.request_started = self.request, time.monotonic()
            return done

        def handle_close(self):
            if self.drain_refused and not self.drain_left and self.connected and self.socket is not None:
                try:
                    self.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    return super().handle_close()
                self.will_close = self.close_when_flushed = False
                self.drain_left, self.drain_until = _DRAIN_LIMIT, time.monotonic() + _DRAIN_SECONDS
                return None
            return super().handle_close()

        def readable(self):
            return True if self.drain_left else super().readable()

        def writable(self):  # while draining: "writable" only to be woken up and closed at the deadline
            return time.monotonic() > self.drain_until if self.drain_left else super().writable()

        def handle_write(self):
            if self.drain_left:
                return self._end_drain()
            return super().handle_write()

        def handle_read(self):
            if not self.drain_left:
                return super().handle_read()
            try:
                data = self.socket.recv(1 << 16)
            except OSError:
                data = b""
            self.drain_left = max(0, self.drain_left - len(data)) if data else 0
            if not self.drain_left:
                self._end_drain()
            return None

        def _end_drain(self):
            self.drain_left, self.drain_refused = 0, False
            HTTPChannel.handle_close(self)

    class Server(TcpWSGIServer):
        channel_class = Channel
        max_bytes = DEFAULT_MAX_BYTES
        request_timeout = DEFAULT_REQUEST_TIMEOUT

        def maintenance(self, now):
            """waitress closes idle connections; also close those whose request is overdue."""
            super().maintenance(now)
            cutoff = time.monotonic() - self.request_timeout
            for ch in list(self.active_channels.values()):
                if ch.request is not None and not ch.requests and ch.request_started < cutoff:
                    ch.will_close = True

    return Adj, Server


def serving_available() -> bool:
    """Whether the ``serve`` extra (waitress) is installed."""
    try:
        _waitress_classes()
    except ServeUnavailable:
        return False
    return True


class SplitServer:
    """A bound, not yet running service: ``serve_forever()`` runs it, ``shutdown()`` (from another
    thread) stops it, ``server_close()`` releases its sockets; ``server_address`` is ``(host, port)``
    with the real port when 0 was asked. The same shape as :mod:`socketserver`'s servers."""

    def __init__(self, wsgi_server, tick: float):
        self._server = wsgi_server
        self._tick = tick
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._closed = False
        self.server_address = (wsgi_server.effective_host, int(wsgi_server.effective_port))

    @property
    def open_connections(self) -> int:
        """Client connections open now (for tests and monitoring)."""
        return len(self._server.active_channels)

    def serve_forever(self) -> None:
        from waitress import wasyncore

        self._stop.clear()
        self._stopped.clear()
        try:
            while not self._stop.is_set() and self._server._map:
                wasyncore.loop(timeout=self._tick, map=self._server._map, use_poll=True, count=1)
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        self._stop.set()
        if not self._closed:
            self._server.pull_trigger()  # wake the loop now rather than at its next tick
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket and every connection, and stop the worker threads."""
        if self._closed:
            return
        self._closed = True
        from waitress import wasyncore

        self._server.task_dispatcher.shutdown()
        wasyncore.close_all(self._server._map, ignore_all=True)


def make_server(decoder, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = DEFAULT_MAX_BYTES, *,
                quiet: bool = False, read_timeout: float = DEFAULT_READ_TIMEOUT,
                request_timeout: float = DEFAULT_REQUEST_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                threads: int = DEFAULT_THREADS) -> SplitServer:
    """A bound, not yet running service for ``decoder`` (see :class:`SplitServer`).

    Raises :class:`ServeUnavailable` (with the install command) without the ``serve`` extra.
    """
    Adj, Server = _waitress_classes()
    if not (read_timeout > 0 and request_timeout > 0 and max_connections >= 1 and threads >= 1):
        raise ValueError("timeouts must be > 0, max_connections and threads >= 1")
    # The loop wakes at least every tick to close overdue connections; waitress's own cut-off is set a
    # tick early so that no connection outlives a timeout (each closes between 90 % and 100 % of it).
    tick = min(1.0, read_timeout / 10, request_timeout / 10)
    log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    # waitress counts its listening socket and its wake-up pipe among the connections: hence + 2
    adj = Adj(host=host, port=port, threads=threads, connection_limit=int(max_connections) + 2,
              channel_timeout=read_timeout - tick, cleanup_interval=tick / 2, max_request_body_size=int(max_bytes) + 1,
              max_request_header_size=_MAX_HEADER_BYTES, inbuf_overflow=_INBUF_BYTES, ident="splitcodec/1",
              asyncore_use_poll=True, log_socket_errors=False, clear_untrusted_proxy_headers=False)
    server = Server(make_app(decoder, max_bytes, log=log), map={}, adj=adj, sockinfo=adj.listen[0])
    server.max_bytes, server.request_timeout = int(max_bytes), float(request_timeout) - tick
    return SplitServer(server, tick)


def serve(decoder, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = DEFAULT_MAX_BYTES,
          *, background: bool = False, quiet: bool = False, **limits) -> SplitServer:
    """Serve predictions. Blocks until interrupted, or with ``background=True`` runs on a daemon
    thread and returns the server at once (stop it with ``server.shutdown(); server.server_close()``).
    ``limits``: ``read_timeout``, ``request_timeout``, ``max_connections``, ``threads``."""
    server = make_server(decoder, host, port, max_bytes, quiet=quiet, **limits)
    if background:
        threading.Thread(target=server.serve_forever, name="splitcodec-serve", daemon=True).start()
        return server
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return server


# -- the client ------------------------------------------------------------------------------------


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
