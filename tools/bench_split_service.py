"""Measure `splitcodec serve` under slow and hostile clients. Loopback only.

The server runs in a child process (this script with ``--child``) so that its threads, open files
and memory (RSS) are read from /proc without the clients' share. Every loop is bounded.

Phases:

1. **latency**: sequential requests, each on a new connection, then on one keep-alive connection;
2. **stalled**: ``--stalled`` connections each declare a body and send 3 bytes of it; while they are
   open, valid requests on new connections are timed; then we wait for the server to close them and
   report how long after their last byte each was closed (against ``--read-timeout``);
3. **load**: ``--clients`` threads x ``--requests`` requests each, every client on its own keep-alive
   connection, for ``--rounds`` rounds; errors, p50/p99/max latency, and the server's RSS after
   each round.

    python tools/bench_split_service.py                       # the figures in the README
    python tools/bench_split_service.py --stalled 50 --requests 20 --rounds 1   # a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

def child(args) -> None:
    """Serve with the shipped default model and print the port on stdout."""
    import logging

    from neural_codecs.codec import split
    from neural_codecs.codec.serve.split import make_server

    logging.getLogger("waitress").setLevel(logging.ERROR)  # "task queue depth" notices under load
    server = make_server(split.ServerDecoder(), "127.0.0.1", 0, quiet=True, read_timeout=args.read_timeout,
                         max_connections=args.max_connections, threads=args.threads)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def proc_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    field = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    return {"rss_mb": round(int(field["VmRSS"].split()[0]) / 1024, 1), "threads": int(field["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def pct(xs, q) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1e3, q)), 1)


def one_request(port: int, body: bytes) -> float:
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with contextlib.closing(c):
        c.request("POST", "/predict", body=body)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
    return time.perf_counter() - t0


def phase_latency(port: int, body: bytes, n: int) -> dict:
    fresh = [one_request(port, body) for _ in range(n)]
    keep = []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with contextlib.closing(c):
        for _ in range(n):
            t0 = time.perf_counter()
            c.request("POST", "/predict", body=body)
            r = c.getresponse()
            r.read()
            assert r.status == 200
            keep.append(time.perf_counter() - t0)
    return {"new_connection_ms": {"p50": pct(fresh, 50), "max": pct(fresh, 100)},
            "keep_alive_ms": {"p50": pct(keep, 50), "max": pct(keep, 100)}}


def phase_stalled(port: int, pid: int, body: bytes, n_stalled: int, n_probe: int, read_timeout: float) -> dict:
    head = b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Length: 900\r\n\r\nabc"
    socks, last_byte = [], {}
    for _ in range(n_stalled):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(head)
        last_byte[s] = time.monotonic()
        socks.append(s)
    time.sleep(0.2)  # let the server take them all in
    during = proc_stats(pid)
    probe = [one_request(port, body) for _ in range(n_probe)]
    closed_after = []
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + 3 * read_timeout + 5
    while len(closed_after) < n_stalled and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                closed_after.append(time.monotonic() - last_byte[s])
                sel.unregister(s)
    for s in socks:
        s.close()
    time.sleep(0.2)
    return {"stalled": n_stalled, "server_while_stalled": during,
            "valid_request_ms": {"p50": pct(probe, 50), "max": pct(probe, 100), "n": n_probe},
            "closed": len(closed_after), "read_timeout_s": read_timeout,
            "closed_after_s": {"min": round(min(closed_after), 3), "max": round(max(closed_after), 3)}
            if closed_after else None,
            "server_after": proc_stats(pid)}


def phase_load(port: int, pid: int, body: bytes, clients: int, requests: int, rounds: int) -> dict:
    rows = []
    for _ in range(rounds):
        lat, errors = [[] for _ in range(clients)], [0] * clients

        def client(i):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with contextlib.closing(c):
                for _ in range(requests):
                    t0 = time.perf_counter()
                    try:
                        c.request("POST", "/predict", body=body)
                        r = c.getresponse()
                        doc = json.loads(r.read())
                        ok = r.status == 200 and "top1" in doc
                    except (OSError, http.client.HTTPException, ValueError):
                        ok = False
                        c.close()
                    lat[i].append(time.perf_counter() - t0)
                    errors[i] += not ok

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        wall = time.perf_counter() - t0
        flat = [x for xs in lat for x in xs]
        rows.append({"requests": len(flat), "errors": sum(errors), "p50_ms": pct(flat, 50), "p99_ms": pct(flat, 99),
                     "max_ms": pct(flat, 100), "req_per_s": round(len(flat) / wall, 1), **proc_stats(pid)})
    return {"clients": clients, "requests_per_client": requests, "rounds": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--read-timeout", type=float, default=2.0, help="server read timeout, s (%(default)s)")
    ap.add_argument("--max-connections", type=int, default=500, help="server connection cap (%(default)s)")
    ap.add_argument("--threads", type=int, default=4, help="server decoding threads (%(default)s)")
    ap.add_argument("--stalled", type=int, default=200, help="stalled connections (%(default)s)")
    ap.add_argument("--probe", type=int, default=20, help="valid requests while they stall (%(default)s)")
    ap.add_argument("--latency", type=int, default=30, help="sequential requests per latency mode (%(default)s)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (%(default)s)")
    ap.add_argument("--requests", type=int, default=100, help="requests per client and round (%(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="load rounds, RSS read after each (%(default)s)")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    from neural_codecs.codec import split

    body = split.EdgeEncoder().encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cmd = [sys.executable, __file__, "--child", "--read-timeout", str(args.read_timeout),
           "--max-connections", str(args.max_connections), "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        port = int(proc.stdout.readline())
        for _ in range(5):  # warm-up
            one_request(port, body)
        report = {"body_bytes": len(body), "server_start": proc_stats(proc.pid),
                  "latency": phase_latency(port, body, args.latency),
                  "stalled": phase_stalled(port, proc.pid, body, args.stalled, args.probe, args.read_timeout),
                  "load": phase_load(port, proc.pid, body, args.clients, args.requests, args.rounds),
                  "cpus": os.cpu_count()}
    finally:
        proc.terminate()
        proc.wait(10)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
