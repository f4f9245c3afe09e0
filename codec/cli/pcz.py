"""``pcz``: lossless image compression with probabilistic circuits (command line).

A thin shell over :mod:`codec.pcz`; see ``pcz --help`` and ``pcz COMMAND --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import ModelMismatchError
from neural_codecs.models.pc import tree_height
from neural_codecs.models.pc.adapt import check_setting

from . import STDIO, UsageError, add_version, read_input, real, run, show_progress, whole
from .. import pcz
from ..io.images import encode_png, luma, read_image
from ..train.pcz import is_idx, list_inputs, load_same_size, sample_patches, train

PROG = "pcz"

EPILOG = """examples:
  pcz compress photo.png                  # -> photo.pcz (shipped natural-image model)
  pcz compress digit.png -o d.pcz         # a 28x28 gray image uses the shipped MNIST model
  pcz decompress photo.pcz                # -> photo.decoded.png, bit-exact (never photo.png)
  pcz compress *.png -o packed/           # several inputs: one .pcz each in packed/
  cat photo.png | pcz compress - > photo.pcz && pcz decompress - < photo.pcz > back.png
  pcz compress --archive t10k-images-idx3-ubyte.gz -o mnist-test.pcz   # a data set in one file
  pcz info photo.pcz
  pcz bench --archive t10k-images-idx3-ubyte.gz
  pcz train train-images-idx3-ubyte.gz -o mnist.npz -K 32

Shipped models: mnist (28x28 gray), natural-gray and natural-rgb (any size, patches with context).
Errors print one line and exit with status 2; nothing is written on error."""


def _log(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Model selection
# ---------------------------------------------------------------------------------------------

_MODELS: dict = {}


def _model(spec) -> pcz.PczModel:
    key = str(spec)
    if key not in _MODELS:
        _MODELS[key] = pcz.load_model(spec)
    return _MODELS[key]


def _shipped_name(model_hash: str | None) -> str | None:
    """The shipped model with this hash (hex), if any."""
    for key in pcz.SHIPPED:
        if model_hash and pcz.shipped_model_path(key).exists() and _model(key).hash.hex() == model_hash:
            return key
    return None


def _model_for_file(info: dict, spec, name: str) -> pcz.PczModel:
    """The model a .pcz file (described by ``info``) names: ``spec`` if given, else the shipped
    model with that hash."""
    if spec:
        return _model(spec)
    if info["model_hash"] is None:
        raise ModelMismatchError("file names no pcz model", name)
    key = _shipped_name(info["model_hash"])
    if key is not None:
        return _model(key)
    raise ModelMismatchError(f"file needs pcz model {info['model_hash']}, which is none of the shipped models "
                             f"({', '.join(pcz.SHIPPED)}); pass its file with --model", name)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class _Bar:
    """A progress bar on stderr for one long image (none for small ones, with -q, or when stderr
    is not a terminal)."""

    def __init__(self, label: str, pixels: int, quiet: bool):
        self.bar = None
        self.label, self.on = label, pixels >= 1 << 17 and show_progress(quiet)

    def __call__(self, done: int, total: int) -> None:
        if not self.on:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, unit="step", file=sys.stderr, leave=False)
        self.bar.update(done + 1 - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


#: Largest input read from stdin or a file (a 16-bit 2^26-pixel TIFF is far below).
MAX_INPUT_BYTES = 1 << 34


def _read_bytes(p) -> bytes:
    return read_input(p, MAX_INPUT_BYTES)


def _write(out, data: bytes, force: bool, inputs) -> None:
    """Write ``data`` atomically to ``out``, or to stdout for ``-``."""
    if str(out) == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        bs.atomic_write(out, data, force=force, inputs=[i for i in inputs if str(i) != STDIO])


def _check_suffix(out, suffix: str, what: str) -> None:
    """An output must be named for what it holds: a container named ``.png`` fools every tool."""
    if str(out) != STDIO and Path(out).suffix.lower() != suffix:
        raise UsageError(f"{out}: {what} are {suffix} files; name the output *{suffix}, a folder/ or - for stdout")


def _is_dir(out: str | None) -> bool:
    """``-o DIR/`` (or an existing folder): one output per input inside it."""
    return out is not None and out != STDIO and (out.endswith(("/", os.sep)) or Path(out).is_dir())


def _compress_one(path: str, out: str, model_spec, force: bool, quiet: bool = True):
    if path == STDIO:
        import io

        img = read_image(io.BytesIO(_read_bytes(STDIO)), "stdin")
    else:
        img = read_image(path)
    model = _model(model_spec or pcz.default_model_for(img))
    bar = _Bar(path, img.shape[0] * img.shape[1], quiet)
    t = time.perf_counter()
    data = pcz.compress_ex(img, model, progress=bar).data
    bar.close()
    dt = time.perf_counter() - t
    _write(out, data, force, [path])
    return out, len(data), img.size, dt, _limit_note(data, model, out) or _fit_note(data, img, model, model_spec, out)


def _fit_note(data: bytes, img: np.ndarray, model: pcz.PczModel, spec, out) -> str | None:
    """A warning when the model fits the image badly: more bits a subpixel than the raw 8 (the
    MNIST model on a photograph), with the model to use instead."""
    bpsp = 8 * len(data) / img.size
    stored = pcz.file_info(data)["stored"]
    if bpsp <= 8 and not stored:
        return None
    better = pcz.default_model_for(img)
    hint = f"; the shipped {better!r} model is made for images like this one" if better != spec else ""
    if stored:
        hint = hint or " (noise, or unlike anything the model learned)"
        return f"{out}: warning: model {spec or better!r} gains nothing on this image: stored uncompressed{hint}"
    return f"{out}: warning: model {spec or better!r} codes this image at {bpsp:.2f} bits/subpixel, more than raw 8{hint}"


def _worker_init() -> None:
    import numba

    numba.set_num_threads(1)  # one process per core; no oversubscription


def cmd_compress(args) -> None:
    inputs = [Path(p) for p in args.inputs]
    if args.archive or (len(inputs) == 1 and is_idx(inputs[0])):
        imgs = load_same_size(list_inputs(inputs))
        out = args.output or inputs[0].with_suffix(".pcz").name.replace("-idx3-ubyte", "")
        model = _model(args.model or pcz.default_model_for(imgs[0]))
        bs.check_output(out, force=args.force, inputs=inputs)
        t = time.perf_counter()
        res = pcz.compress_archive(imgs, model, block=args.block)
        dt = time.perf_counter() - t
        bs.atomic_write(out, res.data, force=args.force, inputs=inputs)
        _log(args, f"{out}: {len(imgs)} images, {len(res.data)} bytes, {res.bits_per_subpixel:.4f} bits/subpixel "
                   f"(ideal {res.ideal_bits_per_subpixel:.4f}), {len(imgs) / dt:.0f} images/s")
        note = _limit_note(res.data, model, out)
        if note:
            _log(args, note)
        return
    if STDIO in args.inputs and len(inputs) > 1:
        raise UsageError("- (stdin) must be the only input")
    if _is_dir(args.output):
        outs = [str(Path(args.output) / ((p.stem if str(p) != STDIO else "stdin") + ".pcz")) for p in inputs]
    elif args.output and len(inputs) > 1:
        raise UsageError("several inputs need -o FOLDER/ (or --archive)")
    elif args.output:
        outs = [args.output]
    elif args.inputs == [STDIO]:
        outs = [STDIO]
    else:
        outs = [str(p.with_suffix(".pcz")) for p in inputs]
    for p, o in zip(inputs, outs):
        if o != STDIO:
            bs.check_output(o, force=args.force, inputs=[p] if str(p) != STDIO else [])
        _check_suffix(o, ".pcz", "pcz files")
    if _is_dir(args.output):  # after every check: a refused command leaves nothing behind
        Path(args.output).mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), o, args.model, args.force, args.quiet or len(inputs) > 1) for p, o in zip(inputs, outs)]
    if len(jobs) > 1 and args.jobs > 1:
        with ProcessPoolExecutor(min(args.jobs, len(jobs)), initializer=_worker_init) as pool:
            results = list(pool.map(_compress_one, *zip(*jobs)))
    else:
        results = [_compress_one(*j) for j in jobs]
    for out, nbytes, sub, dt, note in results:
        _log(args, f"{'stdout' if out == STDIO else out}: {nbytes} bytes, {8 * nbytes / sub:.4f} bits/subpixel, {dt * 1000:.1f} ms")
        if note:
            _log(args, note)


def _limits(args) -> pcz.Limits:
    """The decoder's limits, each default raised by its flag if given."""
    given = {k: getattr(args, k) for k in _LIMIT_FLAGS if getattr(args, k, None) is not None}
    return dataclasses.replace(pcz.DEFAULT_LIMITS, **given)


_LIMIT_FLAGS = ("max_pixels", "max_images", "max_total", "max_ratio", "max_state")


def _limit_note(data: bytes, model: pcz.PczModel, out) -> str | None:
    """A line telling how to decode ``data`` if the default decoder limits refuse it (a flat
    image codes to almost nothing), else None."""
    try:
        pcz.check_limits(data, model)
    except bs.AbsurdSizeError as err:
        return f"{out}: note: decoding needs a raised limit ({err.message}); see pcz decompress --help"
    return None


def _decoded_name(p: Path, folder: str | None, ending: str = ".decoded.png") -> str:
    """The default output of decoding ``p``: ``a.pcz`` -> ``a.decoded.png``, which never collides
    with the ``a.png`` it was made from (in ``folder`` when given: ``-o DIR/``)."""
    name = (p.stem if str(p) != STDIO else "stdin") + ending
    return str(Path(folder) / name) if folder else str(p.with_name(name))


def cmd_decompress(args) -> None:
    inputs = [Path(p) for p in args.inputs]
    if STDIO in args.inputs and len(inputs) > 1:
        raise UsageError("- (stdin) must be the only input")
    folder = args.output if _is_dir(args.output) else None
    if args.output and not folder and len(inputs) > 1:
        raise UsageError("several inputs need -o FOLDER/")
    for p in inputs:
        name = "stdin" if str(p) == STDIO else str(p)
        data = _read_bytes(p)
        info = pcz.file_info(data, name)
        model = _model_for_file(info, args.model, name)
        limits = _limits(args)
        if info["images"] > 1 or args.index is not None:
            if args.index is not None:
                if args.index >= info["images"]:
                    raise UsageError(f"--index {args.index} out of range (the file holds {info['images']} "
                                     f"image{'s' if info['images'] != 1 else ''})", name)
                out = (args.output if args.output and not folder else
                       _decoded_name(p, folder, f"-{args.index}.png"))
                _check_suffix(out, ".png", "decoded images")
                img = pcz.decompress_archive(data, model, name, index=args.index, limits=limits)
                if folder:  # made only once there is something to put in it
                    Path(folder).mkdir(parents=True, exist_ok=True)
                _write(out, encode_png(img), args.force, [p])
                _log(args, f"{out}: image {args.index} of {info['images']}")
                continue
            if str(p) == STDIO or args.output == STDIO:
                raise UsageError("an archive decodes to a folder of images: give it as a file and -o FOLDER/", name)
            outdir = Path(folder) / p.stem if folder else Path(args.output or p.with_suffix(""))
            imgs = pcz.decompress_archive(data, model, name, limits=limits)
            outdir.mkdir(parents=True, exist_ok=True)
            width = len(str(len(imgs) - 1))
            for i, img in enumerate(imgs):
                bs.atomic_write(outdir / f"{i:0{width}d}.png", encode_png(img), force=args.force, inputs=[p])
            _log(args, f"{outdir}/: {len(imgs)} images")
        else:
            if args.output and not folder:
                out = args.output
            elif str(p) == STDIO:
                out = STDIO
            else:
                out = _decoded_name(p, folder)
            if out != STDIO:
                bs.check_output(out, force=args.force, inputs=[p] if str(p) != STDIO else [])
            _check_suffix(out, ".png", "decoded images")
            bar = _Bar(name, info["width"] * info["height"], args.quiet)
            img = pcz.decompress(data, model, name, progress=bar, limits=limits)
            bar.close()
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
            _write(out, encode_png(img), args.force, [p])
            _log(args, f"{'stdout' if out == STDIO else out}: {img.shape[1]}x{img.shape[0]} "
                       f"{'RGB' if img.ndim == 3 else 'gray'}")


def cmd_info(args) -> None:
    for p in args.files:
        name = str(p)
        if str(p).endswith(".npz") or p in pcz.SHIPPED:
            m = _model(p)
            L = m.layout
            print(json.dumps({"file": name, "model": m.name, "hash": m.hash.hex(), "patch": [L.ph, L.pw, L.channels],
                              "context_variables": int((~L.coded).sum()), "variables": m.D, "latent_states": m.K, "precision_bits": m.precision,
                              "adapt": None if m.adapt is None else dict(zip(("strength", "every", "decay"), m.adapt)),
                              "tree_height": int(tree_height(m.parent)), "info": m.info}, indent=1))
            continue
        info = pcz.file_info(_read_bytes(p), name)
        print(json.dumps({"file": name, **info, "model": _shipped_name(info["model_hash"])}, indent=1))


def cmd_train(args) -> None:
    from tqdm import tqdm

    paths = list_inputs(args.inputs)
    if not paths:
        raise UsageError(f"no images or idx files found in {' '.join(args.inputs)}")
    bs.check_output(args.output, force=args.force, inputs=paths)
    if args.patch:
        imgs = [read_image(p) for p in paths[:args.max_images]]
        channels = 3 if args.channels == "rgb" else 1
        if channels == 3:
            imgs = [i for i in imgs if i.ndim == 3]
        else:
            imgs = [i if i.ndim == 2 else luma(i) for i in imgs]
        layout = pcz.PatchLayout.with_context(args.patch, args.patch, channels)
        data = sample_patches(imgs, layout, args.patches_per_image, seed=args.seed)
        source = f"{len(imgs)} images, {args.patches_per_image} patches each"
    else:
        imgs = load_same_size(paths, args.max_images)
        layout = pcz.PatchLayout.whole(imgs.shape[1], imgs.shape[2], 1 if imgs.ndim == 3 else 3)
        data = imgs.reshape(len(imgs), -1)
        source = f"{len(imgs)} images of {imgs.shape[2]}x{imgs.shape[1]}"
    _log(args, f"training on {source}: {data.shape[0]} rows of {data.shape[1]} variables, K={args.K}")
    bar = tqdm(total=args.epochs + args.full_epochs, unit="epoch", disable=not show_progress(args.quiet), file=sys.stderr)

    def progress(epoch, total, bpd):
        bar.update(1)
        bar.set_postfix(train_bpd=f"{bpd:.4f}")

    model = train(data, layout, K=args.K, epochs=args.epochs, full_epochs=args.full_epochs, batch=args.batch,
                  inertia=tuple(args.inertia),
                  pseudocount=args.pseudocount, seed=args.seed, name=args.name or Path(args.output).stem,
                  info={"source": source}, progress=progress,
                  adapt=None if args.adapt == "none" else args.adapt or (pcz.DEFAULT_ADAPT if args.patch else None))
    bar.close()
    model.save(args.output, force=args.force)
    _log(args, f"{args.output}: model {model.hash.hex()}, {os.path.getsize(args.output)} bytes")


def cmd_bench(args) -> None:
    """Theoretical vs actual bits per subpixel, per file and whole set; encode/decode speed."""
    paths = list_inputs(args.inputs)
    rows, tot_bits, tot_ideal, tot_sub = [], 0, 0.0, 0
    if args.archive or any(is_idx(p) for p in paths):
        imgs = load_same_size(paths, args.limit)
        model = _model(args.model or pcz.default_model_for(imgs[0]))
        enc_t, dec_t = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = pcz.compress_archive(imgs, model, block=args.block)
            enc_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            back = pcz.decompress_archive(res.data, model)
            dec_t.append(time.perf_counter() - t)
        assert np.array_equal(back, imgs), "archive round trip is not bit-exact"
        out = {"name": "pcz", "description": f"pcz archive, model {model.name} ({model.hash.hex()})",
               "results": {"images": len(imgs), "bits_per_subpixel": 8 * len(res.data) / imgs.size,
                           "ideal_bits_per_subpixel": res.ideal_bits / imgs.size,
                           "overhead_percent": 100 * (8 * len(res.data) / res.ideal_bits - 1),
                           "encode_images_per_s": len(imgs) / statistics.median(enc_t),
                           "decode_images_per_s": len(imgs) / statistics.median(dec_t)}}
    else:
        for p in paths:
            img = read_image(p)
            model = _model(args.model or pcz.default_model_for(img))
            res, te, td = pcz.timed_roundtrip(img, model)
            rows.append({"file": str(p), "bits_per_subpixel": res.bits_per_subpixel,
                         "ideal_bits_per_subpixel": res.ideal_bits_per_subpixel, "encode_ms": 1000 * te,
                         "decode_ms": 1000 * td})
            tot_bits += 8 * len(res.data)
            tot_ideal += res.ideal_bits
            tot_sub += res.subpixels
            _log(args, f"{p}: {res.bits_per_subpixel:.4f} bits/subpixel (ideal {res.ideal_bits_per_subpixel:.4f}), "
                       f"encode {1000 * te:.0f} ms, decode {1000 * td:.0f} ms")
        out = {"name": "pcz", "description": "pcz, one file per image",
               "results": {"files": [r["file"] for r in rows],
                           "bits_per_subpixel": [r["bits_per_subpixel"] for r in rows],
                           "ideal_bits_per_subpixel": [r["ideal_bits_per_subpixel"] for r in rows],
                           "encode_ms": [r["encode_ms"] for r in rows], "decode_ms": [r["decode_ms"] for r in rows],
                           "set_bits_per_subpixel": tot_bits / tot_sub, "set_ideal_bits_per_subpixel": tot_ideal / tot_sub}}
    text = json.dumps(out, indent=1)
    if args.json:
        bs.atomic_write(args.json, text.encode(), force=args.force)
    print(text)


# ---------------------------------------------------------------------------------------------


def adapt_spec(text: str):
    """'none' or 'A,EVERY,DECAY' (argparse type)."""
    if text == "none":
        return text
    try:
        a, every, decay = text.split(",")
        return check_setting(float(a), float(every), float(decay))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected 'none' or A,EVERY,DECAY ({err})") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Lossless image compression with probabilistic circuits "
                                 "(Hidden Chow-Liu Trees; Liu, Mandt & Van den Broeck, ICLR 2022).",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, force=True):
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
        if force:
            p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs (never an input)")

    p = sub.add_parser("compress", help="image(s) -> .pcz", description="Compress PNG images (8-bit gray or RGB) "
                       "losslessly. One output per input, or one archive for a whole data set.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="images (PNG, JPEG, WebP, TIFF: anything Pillow reads), or an MNIST idx file (makes an archive)")
    p.add_argument("-o", "--output", help="output .pcz file, FOLDER/ for several inputs, or - for stdout "
                   "(default: IN with .pcz; stdout when IN is -)")
    p.add_argument("-m", "--model", help="shipped model name or model file (default: chosen by image size/type)")
    p.add_argument("--archive", action="store_true", help="all inputs (same size) into one archive file")
    p.add_argument("--block", type=whole(1), default=pcz.ARCHIVE_BLOCK, help="images per stream in an archive (%(default)s)")
    p.add_argument("-j", "--jobs", type=whole(1), default=os.cpu_count() or 1, help="parallel processes for several inputs")
    common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help=".pcz -> PNG", description="Decompress .pcz files bit-exactly. "
                       "The model is found from the hash the file names (shipped models), or given with --model.")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p.add_argument("-o", "--output", help="output .png, FOLDER/, or - for stdout (default: IN.decoded.png, "
                   "never the image it was made from; an archive: a folder named after IN)")
    p.add_argument("-m", "--model", help="model file, if the file was made with a model that is not shipped")
    p.add_argument("--index", type=whole(0), help="decode only image INDEX of an archive")
    d = pcz.DEFAULT_LIMITS
    p.add_argument("--max-pixels", type=whole(1), help=f"largest image decoded, in pixels ({d.max_pixels})")
    p.add_argument("--max-images", type=whole(1), help=f"most images an archive may hold ({d.max_images})")
    p.add_argument("--max-total", type=whole(1), help=f"most subpixels of a whole archive ({d.max_total})")
    p.add_argument("--max-ratio", type=real(0, strict=True),
                   help=f"most subpixels decoded per payload byte beyond the first {d.free_subpixels} ({d.max_ratio:g}); "
                        "a larger image from fewer bytes is refused as a decompression bomb")
    p.add_argument("--max-state", type=whole(1), help=f"most coder state values of one wavefront step ({d.max_state})")
    common(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="describe .pcz or model files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_info, quiet=False)

    p = sub.add_parser("train", help="learn a model from images", description="Learn an HCLT model by EM. "
                       "Same-size images (e.g. MNIST idx files) give a whole-image model; --patch N gives a "
                       "patch model with context that codes images of any size.")
    p.add_argument("inputs", nargs="+", metavar="DATA", help="idx files, image files or folders of images")
    p.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    p.add_argument("-K", type=whole(1), default=32, help="latent states per variable (%(default)s)")
    p.add_argument("--epochs", type=whole(0), default=20, help="mini-batch EM epochs (%(default)s)")
    p.add_argument("--full-epochs", type=whole(0), default=3, help="full-batch EM epochs after them (%(default)s)")
    p.add_argument("--batch", type=whole(1), default=512, help="mini-batch size (%(default)s)")
    p.add_argument("--pseudocount", type=real(0), default=0.01, help="Laplace pseudocount (%(default)s)")
    p.add_argument("--inertia", type=real(0, below=1), nargs=2, default=(0.2, 0.9), metavar=("FIRST", "LAST"),
                   help="mini-batch EM keeps this share of the old parameters, rising linearly from the first "
                        "epoch to the last (%(default)s); high values average over batches and overfit less")
    p.add_argument("--patch", type=whole(1), help="train a patch model of N x N pixels with context")
    p.add_argument("--channels", choices=("gray", "rgb"), default="rgb", help="patch model channels (%(default)s)")
    p.add_argument("--patches-per-image", type=whole(1), default=64)
    p.add_argument("--max-images", type=whole(1), help="use at most this many images")
    p.add_argument("--adapt", type=adapt_spec, metavar="A,EVERY,DECAY",
                   help="encoder and decoder refit the tables to the image as it is coded, "
                        "a Dirichlet prior of A pseudo-counts around the trained tables, refreshed every EVERY "
                        "patches (images, for a whole-image model), older counts times DECAY (default: %s for "
                        "patch models, none for whole-image models; 'none' for a fixed model)"
                        % ",".join(map(str, pcz.DEFAULT_ADAPT)))
    p.add_argument("--name", help="model name stored in the file")
    p.add_argument("--seed", type=whole(0), default=0)
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="bits/subpixel (ideal vs actual) and speed", description="Compress and "
                       "decompress, check bit-exactness, report bits per subpixel (theoretical -log2 p vs actual "
                       "file size) per file and for the whole set, and encode/decode speed. Prints CompressAI-style JSON.")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p.add_argument("-m", "--model")
    p.add_argument("--archive", action="store_true", help="code the inputs as one archive")
    p.add_argument("--block", type=whole(1), default=pcz.ARCHIVE_BLOCK)
    p.add_argument("--limit", type=whole(1), help="use only the first N images")
    p.add_argument("--repeats", type=whole(1), default=1, help="timing repeats (median)")
    p.add_argument("--json", help="also write the JSON here")
    common(p)
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
