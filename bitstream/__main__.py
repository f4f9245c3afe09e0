"""Inspect container files: ``python -m neural_codecs.bitstream FILE [FILE ...]``.

Prints the header and the chunk table of any container this library writes (pcz, nervcodec,
splitcodec, ...), after checking every chunk's CRC. A file that is not a valid container gets one
line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .container import BATCH, ITEM, TEXT, ContainerReader, decode_batch, kind_name
from .errors import BitstreamError, OutputExistsError


def describe(path: str) -> dict:
    """Header fields and chunk table of one container file, every CRC checked."""
    with ContainerReader(path) as r:
        h = r.header
        chunks = [{"index": 0, "type": "H", "offset": r.header_chunk.offset,
                   "length": len(r.header_chunk.body), "items": 0}]
        n_items = payload = 0
        texts = {}
        for i, c in enumerate(r.chunks(), start=1):
            items = [c.body] if c.type == ITEM else decode_batch(c.body) if c.type == BATCH else []
            k = len(items)
            payload += sum(map(len, items))
            if c.type == TEXT:
                key, _, value = c.body.partition(b"\0")
                texts[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            chunks.append({"index": i, "type": c.type, "offset": c.offset, "length": len(c.body), "items": k})
            n_items += k
        size = r._size
    return {
        "file": path,
        "bytes": size,
        "format_version": 1,
        "codec": kind_name(h.kind),
        "model_hash": h.model_hash.hex() if h.model_hash else None,
        "width": h.width,
        "height": h.height,
        "channels": h.channels,
        "count": h.count,
        "fps": str(h.fps) if h.fps is not None else None,
        "params_bytes": len(h.params),
        "archive": h.archive,
        "items": n_items,
        "payload_bytes": payload,
        "container_overhead_bytes": size - payload if size is not None else None,
        "text": texts,
        "chunks": chunks,
    }


def _print_text(d: dict) -> None:
    print(f"{d['file']}: {d['bytes']} bytes, container format v{d['format_version']}, codec {d['codec']}")
    fields = [("model", d["model_hash"]), ("size", f"{d['width']}x{d['height']}" if d["width"] is not None else None),
              ("channels", d["channels"]), ("count", d["count"]), ("fps", d["fps"]),
              ("params", f"{d['params_bytes']} bytes" if d["params_bytes"] else None),
              ("archive", "yes" if d["archive"] else None)]
    for k, v in fields:
        if v is not None:
            print(f"  {k:<9}{v}")
    for k, v in d["text"].items():
        print(f"  text     {k}: {v}")
    print(f"  {'chunk':>6} {'type':>4} {'offset':>10} {'length':>10} {'items':>7}")
    for c in d["chunks"]:
        print(f"  {c['index']:>6} {c['type']:>4} {c['offset']:>10} {c['length']:>10} {c['items'] or '':>7}")
    print(f"  {d['items']} item(s), {d['payload_bytes']} payload bytes, "
          f"{d['container_overhead_bytes']} bytes of container; all CRCs ok")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m neural_codecs.bitstream",
        description="Print the header and chunk table of container files (.pcz, .nerv, ...), checking every CRC.",
        epilog="Example: python -m neural_codecs.bitstream digits.pcz --json. Exit status 2 if a file is not a valid container.")
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--json", action="store_true", help="machine-readable output, one JSON object per file")
    args = ap.parse_args(argv)
    try:
        for path in args.files:
            d = describe(path)
            print(json.dumps(d)) if args.json else _print_text(d)
    except (BitstreamError, OutputExistsError) as err:  # one line, status 2, as every CLI of ours
        print(f"bitstream: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"bitstream: error: {err.filename + ': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
