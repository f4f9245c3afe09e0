"""Hardening of pcz and the shared layer: one-patch-wide images, decompression bombs refused
promptly and cheaply, CdfTable parsing bounded by its bytes, the pcz CLI's error contract."""
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from conftest import ROOT

from neural_codecs import bitstream as bs
from neural_codecs.bitstream.varint import encode_uvarint
from neural_codecs.codec import pcz
from neural_codecs.codec.io.images import encode_png


@pytest.fixture(scope="module")
def mnist():
    return pcz.load_model("mnist")


@pytest.fixture(scope="module")
def models(mnist):
    return {"mnist": mnist, "natural-gray": pcz.load_model("natural-gray"), "natural-rgb": pcz.load_model("natural-rgb")}


def forge(model, W, H, C=1, payloads=(b"",), count=None, block=0):
    """A pcz file with the header we choose around the payloads we choose."""
    header = bs.Header(kind=bs.CodecKind.PCZ, model_hash=model.hash, width=W, height=H, channels=C, count=count,
                       archive=count is not None, params=encode_uvarint(block) if count is not None else b"")
    return bs.pack_items(header, list(payloads))


def bounded(fn, seconds=1.0, megabytes=16):
    """Run ``fn``; assert it took under ``seconds`` and allocated under ``megabytes`` (Python and
    numpy allocations, as tracemalloc sees them); return what it raised."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - returned for the caller to check its type
        caught = err
    else:
        caught = None
    finally:
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert dt < seconds, f"took {dt:.2f} s"
    assert peak < megabytes << 20, f"peak {peak / 2**20:.0f} MiB"
    return caught


# -- 1. images at most one patch wide --------------------------------------------------------

ODD_SHAPES = [("mnist", (29, 28)), ("mnist", (57, 28)), ("mnist", (56, 20)), ("mnist", (1, 1)), ("mnist", (1, 40)),
              ("mnist", (40, 1)), ("natural-gray", (1, 1)), ("natural-gray", (7, 1)), ("natural-gray", (1, 7)),
              ("natural-gray", (5, 2)), ("natural-rgb", (1, 1, 3)), ("natural-rgb", (7, 1, 3)),
              ("natural-rgb", (1, 7, 3)), ("natural-rgb", (6, 2, 3))]


@pytest.mark.parametrize("key,shape", ODD_SHAPES)
def test_one_patch_wide_roundtrip(models, key, shape):
    model = models[key]
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.uint8)
    for x in (img, np.zeros_like(img)):
        assert np.array_equal(pcz.decompress(pcz.compress(x, model), model), x)


def test_one_patch_wide_archive_and_forged_header(mnist):
    imgs = np.random.default_rng(0).integers(0, 256, (3, 57, 28)).astype(np.uint8)
    assert np.array_equal(pcz.decompress_archive(pcz.compress_archive(imgs, mnist, block=2).data, mnist), imgs)
    # the decoder failed the same way on such a header: an empty payload decodes to black
    assert np.array_equal(pcz.decompress(forge(mnist, 28, 57), mnist), np.zeros((57, 28), np.uint8))


# -- 2. decompression bombs --------------------------------------------------------------------


def test_34_byte_16384_square_refused_promptly(mnist):
    data = forge(mnist, 16384, 16384)
    assert len(data) == 34
    err = bounded(lambda: pcz.decompress(data, mnist))
    assert isinstance(err, bs.AbsurdSizeError) and "max_pixels" in str(err)
    # with the pixel limit raised, the payload's length still refuses it
    err = bounded(lambda: pcz.decompress(data, mnist, limits=pcz.Limits(max_pixels=1 << 30)))
    assert isinstance(err, bs.AbsurdSizeError) and "max_ratio" in str(err)


def test_32_byte_4096_square_refused_promptly(mnist):
    data = forge(mnist, 4096, 4096)
    assert len(data) == 32
    err = bounded(lambda: pcz.decompress(data, mnist))
    assert isinstance(err, bs.AbsurdSizeError) and "max_ratio" in str(err)


def test_archive_count_is_a_typed_error(mnist):
    n = 5_478_274
    data = forge(mnist, 1, 1, count=n, block=n)
    assert len(data) == 39
    for limits in (pcz.DEFAULT_LIMITS, pcz.Limits(max_total=1 << 40), pcz.Limits(max_total=1 << 40, max_state=1 << 50)):
        err = bounded(lambda: pcz.decompress_archive(data, mnist, limits=limits))
        assert isinstance(err, bs.AbsurdSizeError), err
    err = bounded(lambda: pcz.decompress_archive(data, mnist, limits=pcz.Limits(max_images=10)))
    assert isinstance(err, bs.AbsurdSizeError) and "max_images" in str(err)
    err = bounded(lambda: pcz.decompress_archive(data, mnist, index=3))
    assert isinstance(err, bs.AbsurdSizeError)


def test_damaged_payload_long_image_refused(models):
    # a few bytes of payload claiming a large natural image: refused, not decoded for minutes
    model = models["natural-gray"]
    data = forge(model, 2048, 2048, payloads=[bytes(range(1, 200))])
    err = bounded(lambda: pcz.decompress(data, model))
    assert isinstance(err, bs.AbsurdSizeError)


def test_flat_image_past_the_allowance_decodes_with_a_raised_ratio(mnist):
    img = np.zeros((28, 28 * 90), np.uint8)  # 70,560 black pixels code to an empty payload
    data = pcz.compress(img, mnist)
    with pytest.raises(bs.AbsurdSizeError, match="max_ratio"):
        pcz.check_limits(data, mnist)
    with pytest.raises(bs.AbsurdSizeError, match="max_ratio"):
        pcz.decompress(data, mnist)
    assert np.array_equal(pcz.decompress(data, mnist, limits=pcz.Limits(max_ratio=1e9)), img)


def test_limits_keep_real_files(mnist):
    imgs = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    data = pcz.compress_archive(imgs, mnist, block=2).data
    pcz.check_limits(data, mnist)
    assert np.array_equal(pcz.decompress_archive(data, mnist, index=4), imgs[4])


def _wide_table() -> bytes:
    """75 KB: one 40,000-symbol row, then 5,000 two-symbol rows (rows x widest = 200 M cells, 1.6 GB)."""
    prec = 24
    wide = [0] * 39_999 + [(1 << prec) - 40_000]
    out = bytearray(encode_uvarint(5_001) + bytes([prec]))
    out += encode_uvarint(0) + encode_uvarint(len(wide)) + b"".join(encode_uvarint(f) for f in wide)
    for _ in range(5_000):
        out += encode_uvarint(0) + encode_uvarint(2) + encode_uvarint(0) + encode_uvarint((1 << prec) - 2)
    return bytes(out)


def test_cdf_table_bounded_by_its_bytes():
    data = _wide_table()
    assert len(data) < 100_000
    err = bounded(lambda: bs.CdfTable.from_bytes(data, "t"))
    assert isinstance(err, bs.AbsurdSizeError) and "cells" in str(err)
    # rows that cannot fit in the bytes are refused before any is parsed
    err = bounded(lambda: bs.CdfTable.from_bytes(encode_uvarint(60_000) + b"\x10" + bytes(100)))
    assert isinstance(err, bs.BitstreamError)


def test_cdf_table_cells_limit_is_an_argument():
    table = bs.CdfTable.from_pmfs([np.ones(50), np.ones(3)], [0, -1])
    raw = table.to_bytes()
    with pytest.raises(bs.AbsurdSizeError):
        bs.CdfTable.from_bytes(raw, max_cells=103)
    back, used = bs.CdfTable.from_bytes(raw, max_cells=104)
    assert used == len(raw) and np.array_equal(back.cdf, table.cdf)
    bad = table.cdf.copy()
    bad[1, 2] = bad[1, 1]  # a step of zero mass inside row 1
    with pytest.raises(ValueError, match="row 1"):
        bs.CdfTable(bad, table.lengths, table.offsets)


# -- 3. the CLI contract -------------------------------------------------------------------------


def pcz_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "neural_codecs.codec.cli.pcz", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def one_line_error(r, status=2):
    assert r.returncode == status, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pcz: error: ") and "Traceback" not in r.stderr, r.stderr


def test_cli_damaged_headers_and_bombs(tmp_path, mnist):
    files = {"nosize.pcz": bs.pack_items(bs.Header(kind=bs.CodecKind.PCZ, model_hash=mnist.hash, channels=1), [b""]),
             "ch0.pcz": forge(mnist, 28, 28, C=0), "bomb.pcz": forge(mnist, 16384, 16384),
             "bomb2.pcz": forge(mnist, 4096, 4096)}
    for fname, data in files.items():
        (tmp_path / fname).write_bytes(data)
        if fname.startswith(("nosize", "ch0")):
            one_line_error(pcz_cli("info", fname, cwd=tmp_path))
        t = time.perf_counter()
        one_line_error(pcz_cli("decompress", fname, cwd=tmp_path))
        assert time.perf_counter() - t < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # nothing written
    r = pcz_cli("decompress", "bomb2.pcz", "--max-pixels", "100", cwd=tmp_path)
    one_line_error(r)
    assert "max_pixels" in r.stderr


def test_cli_several_inputs_with_output_exits_2(tmp_path):
    for n in "ab":
        (tmp_path / f"{n}.png").write_bytes(encode_png(np.zeros((28, 28), np.uint8)))
    one_line_error(pcz_cli("compress", "a.png", "b.png", "-o", "one.pcz", cwd=tmp_path))
    assert not (tmp_path / "one.pcz").exists()  # several inputs go to -o FOLDER/ (test_pcz_cli_habits.py)


def test_cli_closed_stdout_ends_quietly(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "neural_codecs.codec.cli.pcz", "info", "natural-rgb", "natural-gray"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    p.stdout.close()  # the reader goes away before the command writes
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141 and err == b""


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from neural_codecs.codec.cli import pcz as cli

    assert not cli._Bar("x", 1 << 20, quiet=False).on  # pytest's stderr is no terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli._Bar("x", 1 << 20, quiet=False).on
    assert not cli._Bar("x", 1 << 20, quiet=True).on
