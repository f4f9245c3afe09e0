"""pcz codec: bit-exact round trips, fast == naive bitstreams, golden files, bad input, CLI."""
import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from neural_codecs import bitstream as bs
from neural_codecs.codec import pcz
from neural_codecs.codec.io.images import encode_png, read_idx
from neural_codecs.models.pc.coder import naive_conditionals

import pcz_sample as golden  # noqa: E402

WHOLE = pcz.PczModel.load(golden.WHOLE_MODEL)
PATCH = pcz.PczModel.load(golden.PATCH_MODEL)
GOLDEN_HASHES = {"tiny_rgb.pcz": "eb8be96ba54469e4955dba8708f9d3cf6d0885c51eac2d345bd37af35aed5a3c", "tiny_whole_archive.pcz": "5e231ac1648fcbf8169065dfdc2e14635c963039312a3b18fdd0da31f8e36d41",
                 "tiny_gray_20bit.pcz": "fe7561b17c6394e671aa338111a4f67a6653378f73634fe95b63e1c7031e58ad",
                 "tiny_rgb_adapt.pcz": "f7724cbfc3f5c72739a8db1708bf5d21e2652e2217ecf532791cf146a2d64ddd",
                 "tiny_rgb_stored.pcz": "66d638679841b98cfb50f9b72d38498d4c766554640bb50d67dbac783c71f85a"}
ADAPT = pcz.PczModel.load(golden.ADAPT_MODEL)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2, 3), (3, 5, 3), (5, 7, 3), (9, 4, 3), (16, 16, 3)])
def test_rgb_roundtrip_any_size(shape):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for store in (False, True):  # the coder's path, and what a user gets (stored noise)
        data = pcz.compress(img, PATCH, store=store)
        assert np.array_equal(pcz.decompress(data, PATCH), img)


@pytest.mark.parametrize("shape", [(6, 5), (1, 1), (7, 11), (12, 10)])
def test_gray_whole_model_tiles_any_size(shape):
    img = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(pcz.decompress(pcz.compress(img, WHOLE, store=False), WHOLE), img)


def test_real_photo_crop():
    from skimage import data as skdata

    img = skdata.astronaut()[200:231, 180:203]
    res = pcz.compress_ex(img, PATCH)
    assert np.array_equal(pcz.decompress(res.data, PATCH), img)
    assert res.payload_bytes * 8 <= res.ideal_bits + 64


def test_archive_and_random_access():
    imgs = np.random.default_rng(4).integers(0, 256, (7, 6, 5), dtype=np.uint8)
    res = pcz.compress_archive(imgs, WHOLE, block=3)
    assert np.array_equal(pcz.decompress_archive(res.data, WHOLE), imgs)
    for i in (0, 4, 6):
        assert np.array_equal(pcz.decompress_archive(res.data, WHOLE, index=i), imgs[i])
    info = pcz.file_info(res.data)
    assert info["images"] == 7 and info["width"] == 5 and info["height"] == 6


def test_fast_and_naive_paths_give_identical_bitstreams():
    img = np.random.default_rng(8).integers(0, 256, (6, 5), dtype=np.uint8)
    tables = WHOLE.tables
    x = img.reshape(-1).astype(np.int64)
    q = naive_conditionals(tables, x)
    enc = bs.Encoder()
    enc.encode_categorical(x[tables.coded_vars], q)
    _, items = bs.read_container(pcz.compress(img, WHOLE, store=False))
    assert items[0] == enc.to_bytes()


def test_golden_files_decode_and_reencode():
    img = pcz.decompress(golden.GOLDEN_IMAGE.read_bytes(), PATCH)
    assert np.array_equal(img, golden.golden_rgb_image())
    imgs = pcz.decompress_archive(golden.GOLDEN_ARCHIVE.read_bytes(), WHOLE)
    assert np.array_equal(imgs, golden.golden_gray_images())
    assert pcz.compress(golden.golden_rgb_image(), PATCH, store=False) == golden.GOLDEN_IMAGE.read_bytes()
    stored = golden.GOLDEN_STORED.read_bytes()  # the stored fallback: header, then chunk S of raw pixels
    assert np.array_equal(pcz.decompress(stored, PATCH), golden.golden_noise_image())
    assert pcz.compress(golden.golden_noise_image(), PATCH) == stored
    for name, digest in GOLDEN_HASHES.items():
        assert hashlib.sha256((golden.HERE / name).read_bytes()).hexdigest() == digest


def test_golden_20_bit_model_file():
    """Models made since the ``precision`` entry store counts out of 2**20 (uint32); the first,
    16-bit files load unchanged and keep their hashes (and so the files coded with them)."""
    m20 = pcz.PczModel.load(golden.WHOLE20_MODEL)
    assert (m20.precision, m20.emit.dtype, WHOLE.precision, WHOLE.emit.dtype) == (20, np.uint32, 16, np.uint16)
    data = golden.GOLDEN_IMAGE20.read_bytes()
    assert np.array_equal(pcz.decompress(data, m20), golden.golden_gray_images()[1])
    assert pcz.compress(golden.golden_gray_images()[1], m20, store=False) == data
    with pytest.raises(bs.ModelMismatchError):
        pcz.decompress(data, WHOLE)  # same tree and layout, other precision: another model


def test_golden_adaptive_model():
    """An ``adapt`` entry makes the coder's tables follow the image (models/pc/adapt.py): the
    golden file pins the update rule; the same tables without adaptation code the image larger."""
    data = golden.GOLDEN_ADAPT.read_bytes()
    img = golden.golden_adapt_image()
    assert ADAPT.adapt == (4.0, 5, 0.9)
    assert np.array_equal(pcz.decompress(data, ADAPT), img)
    assert pcz.compress(img, ADAPT) == data
    fixed = dataclasses.replace(ADAPT, adapt=None, _tables=None, _hash=None)
    assert fixed.hash != ADAPT.hash
    assert len(pcz.compress(img, fixed)) > 1.1 * len(data)


def test_adaptive_decoder_survives_damaged_files():
    """Damaged payloads decode to some image or raise a typed error: the adaptation sees only
    values 0..255 and normalised posteriors, whatever the bits say."""
    data = golden.GOLDEN_ADAPT.read_bytes()
    rng = np.random.default_rng(11)
    for _ in range(25):
        bad = bytearray(data)
        i = int(rng.integers(len(data) - 200, len(data)))
        bad[i] ^= 1 << int(rng.integers(0, 8))
        try:
            out = pcz.decompress(bytes(bad), ADAPT)
        except bs.BitstreamError:
            continue
        assert out.shape == golden.golden_adapt_image().shape and out.dtype == np.uint8


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 5, 3), (9, 4, 3), (21, 13, 3)])
def test_adaptive_roundtrip_any_size(shape):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    img[: shape[0] // 2] //= 16  # two regions with other statistics
    assert np.array_equal(pcz.decompress(pcz.compress(img, ADAPT), ADAPT), img)
    imgs = np.stack([img, img[::-1]])
    assert np.array_equal(pcz.decompress_archive(pcz.compress_archive(imgs, ADAPT, block=1).data, ADAPT), imgs)


def test_model_mismatch_and_bad_files():
    data = pcz.compress(np.zeros((6, 5), np.uint8), WHOLE)
    with pytest.raises(bs.ModelMismatchError, match="needs pcz model"):
        pcz.decompress(data, PATCH)
    with pytest.raises(bs.ModelMismatchError, match="RGB"):
        pcz.compress(np.zeros((4, 4), np.uint8), PATCH)
    for cut in range(0, len(data), 3):
        with pytest.raises(bs.BitstreamError):
            pcz.decompress(data[:cut], WHOLE)
    other = bs.pack_items(bs.Header(kind=bs.CodecKind.NERV), [b"x"])
    with pytest.raises(bs.MalformedError, match="not pcz"):
        pcz.decompress(other, WHOLE)
    huge = bs.pack_items(bs.Header(kind=bs.CodecKind.PCZ, model_hash=WHOLE.hash, width=1 << 20, height=1 << 20,
                                   channels=1), [b""])
    with pytest.raises(bs.AbsurdSizeError):
        pcz.decompress(huge, WHOLE)


def test_model_file_validation(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(pcz.ModelFileError, match="bad.npz"):
        pcz.PczModel.load(bad)
    arrays = dict(np.load(golden.WHOLE_MODEL, allow_pickle=False))
    arrays["emit"] = arrays["emit"].copy()
    arrays["emit"][0, 0, 0] += 1  # rows no longer sum to 2**16
    np.savez(tmp_path / "sum.npz", **arrays)
    with pytest.raises(pcz.ModelFileError, match="2\\*\\*16"):
        pcz.PczModel.load(tmp_path / "sum.npz")
    assert WHOLE.hash == pcz.PczModel.load(golden.WHOLE_MODEL).hash
    arrays = dict(np.load(golden.WHOLE20_MODEL, allow_pickle=False))
    for change, message in ((dict(precision=np.int64(16)), "bad precision 16"),
                            (dict(precision=np.int64(25)), "bad precision 25"),
                            (dict(emit=arrays["emit"].astype(np.uint16)), "20-bit probabilities must be stored as uint32"),
                            (dict(emit=arrays["emit"] // 2), "2\\*\\*20")):
        np.savez(tmp_path / "p.npz", **{**arrays, **change})
        with pytest.raises(pcz.ModelFileError, match=message):
            pcz.PczModel.load(tmp_path / "p.npz")
    arrays = dict(np.load(golden.ADAPT_MODEL, allow_pickle=False))
    for bad in ([0.5, 5, 0.9], [4, 5.5, 0.9], [4, 0, 0.9], [4, 5, 0], [4, 5, 1.01], [np.nan, 5, 0.9], [4, 5]):
        np.savez(tmp_path / "a.npz", **{**arrays, "adapt": np.array(bad, np.float64)})
        with pytest.raises(pcz.ModelFileError, match="a.npz"):
            pcz.PczModel.load(tmp_path / "a.npz")
    np.savez(tmp_path / "a.npz", **{**arrays, "adapt": np.array([4, 5, 1], np.int64)})
    with pytest.raises(pcz.ModelFileError, match="float64"):
        pcz.PczModel.load(tmp_path / "a.npz")


# -- command line -------------------------------------------------------------------------------

def pcz_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "neural_codecs.codec.cli.pcz", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_roundtrip_and_refusals(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(encode_png(img))
    r = pcz_cli("compress", "a.png", "--model", golden.PATCH_MODEL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = pcz_cli("decompress", "a.pcz", "-o", "b.png", "--model", golden.PATCH_MODEL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from neural_codecs.codec.io.images import read_image
    assert np.array_equal(read_image(tmp_path / "b.png"), img)
    # Refuses to overwrite, and never overwrites its input even with --force.
    r = pcz_cli("compress", "a.png", "--model", golden.PATCH_MODEL, cwd=tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr and r.stderr.count("\n") == 1
    r = pcz_cli("decompress", "a.pcz", "-o", "a.pcz", "-f", "--model", golden.PATCH_MODEL, cwd=tmp_path)
    assert r.returncode == 2 and "input" in r.stderr
    # Wrong model, not a container, truncated, not an image: one line, status 2, nothing written.
    (tmp_path / "junk.pcz").write_bytes(b"junk")
    (tmp_path / "cut.pcz").write_bytes((tmp_path / "a.pcz").read_bytes()[:-5])
    (tmp_path / "text.png").write_text("hello")
    cases = [("decompress", "a.pcz", "-o", "w.png", "--model", golden.WHOLE_MODEL),
             ("decompress", "junk.pcz", "-o", "w.png"), ("decompress", "cut.pcz", "-o", "w.png"),
             ("compress", "text.png", "-o", "w.pcz"), ("compress", "missing.png", "-o", "w.pcz"),
             ("decompress", "a.pcz", "-o", "w.png", "--model", "nonexistent.npz")]
    for case in cases:
        r = pcz_cli(*case, cwd=tmp_path)
        assert r.returncode == 2, (case, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (case, r.stderr)
        assert not (tmp_path / "w.png").exists() and not (tmp_path / "w.pcz").exists()


def test_cli_refuses_16_bit_and_alpha(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint16) + 300).save(tmp_path / "deep.png")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(tmp_path / "alpha.png")
    for name in ("deep.png", "alpha.png"):
        r = pcz_cli("compress", name, "-o", "w.pcz", "--model", golden.PATCH_MODEL, cwd=tmp_path)
        assert r.returncode == 2 and ("16-bit" in r.stderr or "alpha" in r.stderr), r.stderr


def test_cli_train_is_deterministic(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 4, (40, 4, 4), dtype=np.uint8) * 60
    raw = b"\0\0\x08\x03" + b"".join(int(v).to_bytes(4, "big") for v in imgs.shape) + imgs.tobytes()
    (tmp_path / "tiny-idx3-ubyte").write_bytes(raw)
    hashes = []
    for out in ("m1.npz", "m2.npz"):
        r = pcz_cli("train", "tiny-idx3-ubyte", "-o", out, "-K", "3", "--epochs", "2", "--full-epochs", "1",
                    "--batch", "16", "-q", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        hashes.append(pcz.PczModel.load(tmp_path / out).hash)
    assert hashes[0] == hashes[1]
    r = pcz_cli("compress", "--archive", "tiny-idx3-ubyte", "-o", "t.pcz", "--model", "m1.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    back = pcz.decompress_archive((tmp_path / "t.pcz").read_bytes(), pcz.PczModel.load(tmp_path / "m1.npz"))
    assert np.array_equal(back, imgs)
    assert pcz.PczModel.load(tmp_path / "m1.npz").adapt is None  # whole-image models: fixed by default...
    r = pcz_cli("train", "tiny-idx3-ubyte", "-o", "a.npz", "-K", "3", "--epochs", "1", "--full-epochs", "0",
                "--batch", "16", "-q", "--adapt", "4,8,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    adaptive = pcz.PczModel.load(tmp_path / "a.npz")
    assert adaptive.adapt == (4.0, 8, 1.0)  # ...unless asked
    data = pcz.compress_archive(imgs, adaptive).data
    assert np.array_equal(pcz.decompress_archive(data, adaptive), imgs)


def test_mnist_digits_with_shipped_model(shared_data):
    if not pcz.shipped_model_path("mnist").exists():
        pytest.skip("shipped MNIST model not built")
    imgs = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz", 50)
    model = pcz.load_model("mnist")
    res = pcz.compress_archive(imgs, model)
    assert np.array_equal(pcz.decompress_archive(res.data, model), imgs)
    assert res.bits_per_subpixel < 1.6


def test_cli_bench_and_info(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(encode_png(img))
    r = pcz_cli("bench", "a.png", "--model", golden.PATCH_MODEL, "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["name"] == "pcz" and len(res["results"]["bits_per_subpixel"]) == 1
    r = pcz_cli("info", golden.GOLDEN_IMAGE, golden.PATCH_MODEL, cwd=tmp_path)
    assert r.returncode == 0 and '"images": 1' in r.stdout and '"latent_states": 3' in r.stdout, r.stderr


def test_cli_finds_shipped_model_by_hash(tmp_path):
    if not pcz.shipped_model_path("natural-rgb").exists():
        pytest.skip("shipped models not built")
    img = np.random.default_rng(3).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(encode_png(img))
    assert pcz_cli("compress", "a.png", cwd=tmp_path).returncode == 0  # default model chosen by image type
    r = pcz_cli("decompress", "a.pcz", "-o", "b.png", cwd=tmp_path)  # model found from the file's hash
    assert r.returncode == 0, r.stderr
    from neural_codecs.codec.io.images import read_image
    assert np.array_equal(read_image(tmp_path / "b.png"), img)
    data = (tmp_path / "a.pcz").read_bytes()
    assert bs.ContainerReader(data, extra_critical=pcz.STORED).header.model_hash == pcz.load_model("natural-rgb").hash


def test_cli_train_patch_model_from_pngs(tmp_path):
    rng = np.random.default_rng(6)
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        base = rng.integers(0, 200, (1, 1, 3))
        img = np.clip(base + rng.integers(0, 40, (18, 20, 3)), 0, 255).astype(np.uint8)
        (tmp_path / "imgs" / f"{i}.png").write_bytes(encode_png(img))
    r = pcz_cli("train", "imgs", "-o", "p.npz", "--patch", "2", "-K", "3", "--epochs", "2", "--full-epochs", "1",
                "--patches-per-image", "16", "--batch", "16", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    model = pcz.PczModel.load(tmp_path / "p.npz")
    assert model.layout.centered and model.layout.subtract_green and model.layout.channels == 3
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert np.array_equal(pcz.decompress(pcz.compress(img, model), model), img)
    assert model.adapt == pcz.DEFAULT_ADAPT  # patch models adapt unless told otherwise
    r = pcz_cli("train", "imgs", "-o", "f.npz", "--patch", "2", "-K", "3", "--epochs", "2", "--full-epochs", "1",
                "--patches-per-image", "16", "--batch", "16", "-q", "--adapt", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert pcz.PczModel.load(tmp_path / "f.npz").adapt is None
    r = pcz_cli("train", "imgs", "-o", "g.npz", "--patch", "2", "--adapt", "5,0,1", cwd=tmp_path)
    assert r.returncode == 2 and "--adapt" in r.stderr and not (tmp_path / "g.npz").exists()
    r = pcz_cli("info", "p.npz", cwd=tmp_path)
    assert r.returncode == 0 and '"every": %d' % pcz.DEFAULT_ADAPT[1] in r.stdout


@pytest.mark.parametrize("shape", [(300, 3), (29, 28), (1, 1), (1, 40, 3), (17, 9, 3)])
def test_incompressible_images_are_stored_not_expanded(shape):
    """Noise codes larger than raw under any model: the file stores the pixels (critical chunk
    ``S``), 8 bits a subpixel plus the container; bit-exact; a reader that predates ``S`` refuses
    the file instead of misreading it; a stored chunk of the wrong size or beside an item is refused."""
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    model = pcz.load_model(pcz.default_model_for(img)) if pcz.shipped_model_path("natural-rgb").exists() else \
        (PATCH if len(shape) == 3 else WHOLE)
    res = pcz.compress_ex(img, model)
    assert res.payload_bytes == img.size and len(res.data) - img.size <= 32
    assert len(res.data) < len(pcz.compress(img, model, store=False))
    assert np.array_equal(pcz.decompress(res.data, model), img)
    assert pcz.file_info(res.data)["stored"] and not pcz.file_info(pcz.compress(img, model, store=False))["stored"]
    pcz.check_limits(res.data, model)
    with pytest.raises(bs.UnknownCriticalChunkError):
        bs.read_container(res.data)
    header = bs.ContainerReader(res.data, extra_critical=pcz.STORED).header
    raw = img.tobytes()
    for chunks in ([(pcz.STORED, raw[:-1])], [(pcz.STORED, raw), (bs.ITEM, b"")], [(pcz.STORED, raw)] * 2):
        with pytest.raises(bs.MalformedError):
            pcz.decompress(bs.write_container(header, chunks), model)
