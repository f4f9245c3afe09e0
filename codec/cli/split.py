"""``splitcodec``: the Entropic Student split-computing codec (command line).

A thin shell over :mod:`codec.split` and :mod:`codec.serve.split`; see ``splitcodec --help``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neural_codecs import bitstream as bs

from . import UsageError, add_version, read_input, real, require_extra, run, whole

require_extra("splitcodec", "split", "torch")

PROG = "splitcodec"

#: Largest .split file read from disk (a real one is a few hundred bytes to a few kB).
MAX_INPUT_BYTES = 64 << 20

EPILOG = """examples:
  splitcodec encode photo.jpg                                # with the shipped default models
  splitcodec decode photo.split
  splitcodec encode photo.jpg -m edge.npz -o photo.split     # edge side: image -> a few hundred bytes
  splitcodec decode photo.split -m server.npz                # server side: top-5 classes
  splitcodec decode photo.split -m server.npz --json --edge edge.npz
  splitcodec serve -m server.npz --edge edge.npz --port 8000 # POST /predict, GET /health
  curl --data-binary @photo.split http://127.0.0.1:8000/predict
  splitcodec eval val/ --edge edge.npz --server server.npz   # top-1 and bytes/image (JSON)

The edge model (encoder + learned prior table) and the server model (decoder + the teacher's
layers after layer1 + class names) are the two .npz files codec.split.save_models writes; every
bitstream names its edge model by content hash, and a server refuses another model's files.
Without -m / --edge / --server the models shipped with the package are used ("default": a small
student of a ResNet-18 trained on 64x64 Imagenette, 10 classes; tools/train_split_defaults.py).
`serve` needs the optional extra: pip install "neural-codecs[serve]" (waitress).
Errors print one line and exit with status 2; an error or Ctrl-C leaves no partial output."""


def _log(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def cmd_encode(args) -> None:
    import io

    from .. import split
    from ..io.images import read_image

    piped = args.input == "-"
    if args.output:
        out = args.output
    else:
        out = "-" if piped else str(Path(args.input).with_suffix(".split"))
    model = split.model_path(args.model, "edge.npz")
    inputs = [model] + ([] if piped else [args.input])
    if out != "-":
        bs.check_output(out, force=args.force, inputs=inputs)
        if Path(out).suffix.lower() != ".split":
            raise UsageError(f"{out}: splitcodec files are .split files; name the output *.split or - for stdout")
    encoder = split.EdgeEncoder(split.load_edge(model))
    img = read_image(io.BytesIO(read_input("-", MAX_INPUT_BYTES)), "stdin") if piped else read_image(args.input)
    try:
        q = encoder.latent(img, name=args.input)
    except ValueError as err:
        if isinstance(err, bs.CodecError):
            raise
        raise UsageError(str(err), args.input) from None
    data = split.encode_latent(q, encoder.model)
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        bs.atomic_write(out, data, force=args.force, inputs=inputs)
    C, h, w = q.shape
    _log(args, f"{'stdout' if out == '-' else out}: {len(data)} bytes (latent {C}x{h}x{w}, edge model {encoder.model_hash.hex()})")


def _server_decoder(args):
    from .. import split

    server = split.load_server(args.model)
    return split.ServerDecoder(server, split.load_edge(args.edge) if args.edge else None, topk=args.topk)


def cmd_decode(args) -> None:
    dec = _server_decoder(args)
    data = read_input(args.input, MAX_INPUT_BYTES)
    res = dec.decode(data, name="stdin" if args.input == "-" else args.input)
    if args.json:
        print(json.dumps({"file": args.input, "top1": res["top1"], "index": res["index"],
                          "topk": [[label, p] for label, p in res["topk"]], "model": res["model"],
                          "bytes": len(data)}))
        return
    print(f"{args.input}: {res['top1']}")
    for label, p in res["topk"]:
        print(f"  {p:8.4f}  {label}")


def cmd_serve(args) -> None:
    from ..serve import split as svc

    if not svc.serving_available():  # before loading any model: say at once what to install
        print(f"{PROG}: error: {svc.INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2)
    if args.quiet:  # waitress's own notices (queue depth, connection limit reached) too
        import logging

        logging.getLogger("waitress").setLevel(logging.ERROR)
    dec = _server_decoder(args)
    server = svc.make_server(dec, args.host, args.port, args.max_bytes, quiet=args.quiet,
                             read_timeout=args.read_timeout, request_timeout=args.request_timeout,
                             max_connections=args.max_connections, threads=args.threads)
    host, port = server.server_address[:2]
    _log(args, f"{PROG}: serving edge model {dec.model_hash.hex()} on http://{host}:{port} "
               f"(POST /predict, GET /health); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _log(args, f"{PROG}: stopped")
    finally:
        server.server_close()


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}


def cmd_eval(args) -> None:
    import time

    from .. import split
    from ..io.images import read_image

    root = Path(args.folder)
    if not root.is_dir():
        raise UsageError("not a folder of class subfolders", str(root))
    edge = split.load_edge(args.edge)
    enc = split.EdgeEncoder(edge)
    dec = split.ServerDecoder(split.load_server(args.server), edge, topk=1)
    index = {name: i for i, name in enumerate(dec.model.class_names)}
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UsageError("no class subfolders", str(root))
    unknown = [c.name for c in classes if c.name not in index]
    if unknown:
        raise UsageError(f"class folder(s) {', '.join(unknown[:3])} not among the model's class names", str(root))
    n = correct = nbytes = 0
    t0 = time.perf_counter()
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if args.limit:
            files = files[: args.limit]
        for f in files:
            data = enc.encode(read_image(f), name=str(f))
            res = dec.decode(data, name=str(f))
            n += 1
            correct += res["index"] == index[c.name]
            nbytes += len(data)
    if n == 0:
        raise UsageError("no images found", str(root))
    dt = time.perf_counter() - t0
    print(json.dumps({"images": n, "top1": correct / n, "bytes_per_image": nbytes / n,
                      "bits_per_image": 8 * nbytes / n, "seconds": round(dt, 3), "edge_model": edge.hash.hex()}))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Split-computing feature codec (Entropic Student, "
                                 "Matsubara et al., WACV 2022): the edge encodes an image to a compact "
                                 "entropy-coded latent; the server classifies from it.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="image -> .split (edge side)",
                       description="Encode an image (PNG, JPEG, anything Pillow reads; resized and centre-"
                       "cropped to the model's input size) with the edge model.")
    p.add_argument("input", metavar="IMG", help="image file, or - for stdin")
    p.add_argument("-m", "--model", default="default", metavar="EDGE.npz",
                   help="edge model file (default: the shipped one)")
    p.add_argument("-o", "--output", metavar="OUT.split", help="output .split file or - for stdout (default: IMG with .split; stdout when IMG is -)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output (never an input)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_encode)

    def server_args(p):
        p.add_argument("-m", "--model", default="default", metavar="SERVER.npz",
                       help="server model file (default: the shipped one)")
        p.add_argument("--edge", metavar="EDGE.npz", help="check that the server pairs with this edge model")
        p.add_argument("-k", "--topk", type=whole(1), default=5, help="classes to report (%(default)s)")

    p = sub.add_parser("decode", help=".split -> class prediction (server side)",
                       description="Decode a .split file and print the top classes (or JSON with --json).")
    p.add_argument("input", metavar="IN.split", help="a .split file, or - for stdin")
    server_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("serve", help="HTTP prediction service",
                       description="Serve POST /predict (body: a .split bitstream) -> JSON, and GET /health.")
    server_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    p.add_argument("--port", type=whole(0, 65535), default=8000, help="port (%(default)s; 0 picks a free one)")
    p.add_argument("--max-bytes", type=whole(1), default=1 << 20, help="largest accepted body (%(default)s)")
    p.add_argument("--read-timeout", type=real(0, strict=True), default=10.0, metavar="S",
                   help="close a connection that sends nothing for S seconds (%(default)s)")
    p.add_argument("--request-timeout", type=real(0, strict=True), default=30.0, metavar="S",
                   help="close a connection whose request has not fully arrived S seconds after it began "
                   "(%(default)s)")
    p.add_argument("--max-connections", type=whole(1), default=500, metavar="N",
                   help="open connections at most; more wait in the listen queue (%(default)s)")
    p.add_argument("--threads", type=whole(1), default=4, help="decoding threads (%(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no request log")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("eval", help="top-1 accuracy and bytes per image over a folder",
                       description="Encode and classify every image of FOLDER/<class name>/*; prints JSON.")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--edge", default="default", metavar="EDGE.npz", help="(default: the shipped one)")
    p.add_argument("--server", default="default", metavar="SERVER.npz", help="(default: the shipped one)")
    p.add_argument("--limit", type=whole(1), help="at most this many images per class")
    p.set_defaults(func=cmd_eval)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
