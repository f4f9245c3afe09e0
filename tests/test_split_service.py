"""`splitcodec serve` under slow and hostile clients: read and request timeouts, the connection cap,
keep-alive latency, and the same JSON answers for bad requests.

Small timeouts (well under a second to a second) keep the whole file to a few seconds. The shipped
default models serve; loopback only.
"""
import contextlib
import http.client
import json
import socket
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("waitress", reason="the [serve] extra (waitress) is not installed")

from neural_codecs.codec import split  # noqa: E402
from neural_codecs.codec.serve import split as split_service  # noqa: E402
from neural_codecs.codec.cli.split import main as cli_main  # noqa: E402
from neural_codecs.codec.serve.split import RemoteError, make_server, predict_remote  # noqa: E402


@pytest.fixture(scope="module")
def codec():
    enc, dec = split.EdgeEncoder(), split.ServerDecoder()
    body = enc.encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    dec.decode(body)  # warm up (first call pays one-off costs)
    return enc, dec, body


@contextlib.contextmanager
def running(dec, **limits):
    limits.setdefault("max_bytes", 4096)
    server = make_server(dec, "127.0.0.1", 0, quiet=True, **limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not thread.is_alive()


def _raw(server, data: bytes) -> socket.socket:
    s = socket.create_connection(server.server_address, timeout=5)
    if data:
        s.sendall(data)
    return s


def _wait_closed(s: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``s`` (reads EOF or a reset); fails after ``limit``."""
    t0 = time.monotonic()
    s.settimeout(limit)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"connection still open after {limit} s")
    return time.monotonic() - t0


def _request(server, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(*server.server_address, timeout=10)
    with contextlib.closing(c):
        chunked = (headers or {}).get("Transfer-Encoding") == "chunked"
        c.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), json.loads(r.read())


def test_stalled_bodies_are_closed_after_the_read_timeout_and_do_not_block(codec):
    _, dec, body = codec
    with running(dec, read_timeout=0.5) as server:
        stalled = [_raw(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\nabc")
                   for _ in range(30)]
        t0 = time.monotonic()
        assert predict_remote("http://%s:%d" % server.server_address, body, timeout=5)["top1"]
        assert time.monotonic() - t0 < 0.4  # answered while the stalled ones are still open
        waits = [_wait_closed(s, 3.0) for s in stalled]
        assert max(waits) < 1.0  # at most 0.5 s after their last byte
        for s in stalled:
            s.close()
        deadline = time.monotonic() + 2
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.open_connections == 0


def test_trickling_request_is_closed_at_the_request_timeout(codec):
    _, dec, _ = codec
    with running(dec, read_timeout=0.5, request_timeout=1.0) as server:
        s = _raw(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
        t0 = time.monotonic()
        with contextlib.closing(s):
            with pytest.raises(OSError):  # never idle for 0.5 s, yet dropped at 1 s
                for _ in range(20):
                    time.sleep(0.15)
                    s.sendall(b"x")
                    s.settimeout(0)
                    with contextlib.suppress(BlockingIOError):
                        if s.recv(1) == b"":
                            raise ConnectionResetError("closed by the server")
            assert 0.8 < time.monotonic() - t0 < 1.5


def test_connection_cap_holds(codec):
    _, dec, body = codec
    with running(dec, read_timeout=0.8, max_connections=3) as server:
        idle = [_raw(server, b"") for _ in range(3)]
        deadline = time.monotonic() + 2
        while server.open_connections < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.open_connections == 3
        late = _raw(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        peak, t0 = 0, time.monotonic()
        late.settimeout(0.05)
        got = b""
        while time.monotonic() - t0 < 3 and b"\r\n\r\n" not in got:
            peak = max(peak, server.open_connections)
            with contextlib.suppress(socket.timeout):
                got += late.recv(4096)
        waited = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 200"), got
        assert peak <= 3  # the fourth connection was not taken in ...
        assert waited > 0.5  # ... until the idle ones had timed out
        for s in idle + [late]:
            s.close()


def test_keep_alive_requests_do_not_stall(codec):
    _, dec, body = codec
    with running(dec) as server:
        c = http.client.HTTPConnection(*server.server_address, timeout=10)
        with contextlib.closing(c):
            times, socks = [], set()
            for _ in range(6):
                t0 = time.perf_counter()
                c.request("POST", "/predict", body=body)
                r = c.getresponse()
                assert r.status == 200 and json.loads(r.read())["top1"]
                times.append(time.perf_counter() - t0)
                socks.add(id(c.sock))
        assert len(socks) == 1  # one connection throughout
        assert max(times[1:]) < 0.1, times  # http.server's split writes stalled each on a delayed ACK


class _InstantDecoder:
    """Answers at once, so that any wait in a request is the transport's."""
    model_hash = bytes(8)
    model = type("M", (), {"class_names": ["a"]})

    def decode(self, data, name=None):
        return {"top1": "a", "index": 0, "topk": [("a", 1.0)], "model": "00"}


def test_keep_alive_has_no_delayed_ack_stall():
    """http.server wrote headers and body as two small sends with Nagle on: each keep-alive request
    after the first waited for the client's delayed ACK (about 40 ms on Linux loopback, far more
    elsewhere). With an instant decoder every request should take about a millisecond."""
    with running(_InstantDecoder()) as server:
        c = http.client.HTTPConnection(*server.server_address, timeout=10)
        with contextlib.closing(c):
            times = []
            for _ in range(12):
                t0 = time.perf_counter()
                c.request("POST", "/predict", body=b"x" * 100)
                r = c.getresponse()
                assert r.status == 200 and json.loads(r.read())["top1"] == "a"
                times.append(time.perf_counter() - t0)
        assert sorted(times[1:])[len(times) // 2] < 0.02, times


def test_bad_requests_get_the_same_json_errors(codec):
    enc, dec, body = codec
    url_of = lambda server: "http://%s:%d" % server.server_address  # noqa: E731
    with running(dec, max_bytes=4096) as server:
        url = url_of(server)
        status, ctype, doc = _request(server, "GET", "/health")
        assert status == 200 and ctype == "application/json" and doc["model"] == dec.model_hash.hex()
        assert doc["status"] == "ok" and doc["classes"] == len(dec.model.class_names)
        for what, bad in {"garbage": b"hello world", "truncated": body[:-5], "empty": b"x"}.items():
            with pytest.raises(RemoteError) as e:
                predict_remote(url, bad)
            assert e.value.status == 400 and e.value.message, what
        with pytest.raises(RemoteError) as e:
            predict_remote(url, bytes(5000))
        assert e.value.status == 413 and e.value.message == "body of 5000 bytes exceeds the limit of 4096"
        # a client still sending a large refused body reads the 413, not a reset connection
        with pytest.raises(RemoteError) as e:
            predict_remote(url + "/predict", bytes(8 << 20))
        assert e.value.status == 413
        assert _request(server, "POST", "/predict", headers={"Content-Length": "abc"})[0] == 400
        with contextlib.closing(http.client.HTTPConnection(*server.server_address, timeout=10)) as c:
            c.putrequest("POST", "/predict")  # no Content-Length at all
            c.endheaders()
            r = c.getresponse()
            assert r.status == 411 and json.loads(r.read()) == {"error": "Content-Length required"}
        status, ctype, doc = _request(server, "GET", "/nowhere")
        assert (status, ctype) == (404, "application/json") and "no such endpoint" in doc["error"]
        assert _request(server, "GET", "/predict")[0] == 405
        # chunked bodies are dechunked and held to the same limit
        status, _, doc = _request(server, "POST", "/predict", body=iter([body[:100], body[100:]]),
                                  headers={"Transfer-Encoding": "chunked"})
        assert status == 200 and doc["top1"] == dec.decode(body)["top1"]
        status, ctype, doc = _request(server, "POST", "/predict", body=iter([bytes(3000), bytes(3000)]),
                                      headers={"Transfer-Encoding": "chunked"})
        assert (status, ctype) == (413, "application/json") and "limit of 4096" in doc["error"]
        assert predict_remote(url, body)["top1"] == dec.decode(body)["top1"]  # still serving


def test_cli_without_the_extra_says_how_to_install(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "waitress" or m.startswith("waitress.")]:
        monkeypatch.setitem(sys.modules, name, None)
    split_service._waitress_classes.cache_clear()
    try:
        with pytest.raises(split_service.ServeUnavailable, match="pip install"):
            make_server(None)
        with pytest.raises(SystemExit) as e:
            cli_main(["serve", "--port", "0"])
    finally:
        split_service._waitress_classes.cache_clear()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("splitcodec: error: ") and 'pip install "neural-codecs[serve]"' in err


def test_cli_serve_limits_are_checked(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["serve", "--read-timeout", "0"])
    assert e.value.code == 2 and "--read-timeout" in capsys.readouterr().err
