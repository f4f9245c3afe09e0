"""pcz's command line as a user of cjxl or ffmpeg expects it: ``-`` for stdin and stdout, output
names checked against what they hold, ``-o FOLDER/`` for several inputs, and a default output
that never collides with the image a file was made from."""
import io
import subprocess
import sys

import numpy as np

from neural_codecs.codec.io.images import encode_png, read_image


def pcz(*args, cwd, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "neural_codecs.codec.cli.pcz", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=300)


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_stdin_and_stdout(tmp_path):
    img = digit(1)
    r = pcz("compress", "-", cwd=tmp_path, stdin=encode_png(img))
    assert r.returncode == 0, r.stderr
    assert r.stdout[:4] != b"" and list(tmp_path.iterdir()) == []  # the container went to stdout only
    back = pcz("decompress", "-", cwd=tmp_path, stdin=r.stdout)
    assert back.returncode == 0, back.stderr
    assert np.array_equal(read_image(io.BytesIO(back.stdout)), img)
    (tmp_path / "a.png").write_bytes(encode_png(img))
    r2 = pcz("compress", "a.png", "-o", "-", cwd=tmp_path)
    assert r2.returncode == 0 and r2.stdout == r.stdout and not (tmp_path / "-").exists()


def test_default_decoded_name_never_collides_with_the_source(tmp_path):
    img = digit(2)
    (tmp_path / "a.png").write_bytes(encode_png(img))
    assert pcz("compress", "a.png", cwd=tmp_path).returncode == 0
    r = pcz("decompress", "a.pcz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(read_image(tmp_path / "a.decoded.png"), img)


def test_output_names_are_checked(tmp_path):
    (tmp_path / "a.png").write_bytes(encode_png(digit(3)))
    for args in (("compress", "a.png", "-o", "x.png"), ("compress", "a.png", "-o", "x.jpg")):
        r = pcz(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and b".pcz" in r.stderr
    assert pcz("compress", "a.png", cwd=tmp_path).returncode == 0
    r = pcz("decompress", "a.pcz", "-o", "x.jpg", cwd=tmp_path)
    assert r.returncode == 2 and b".png" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pcz", "a.png"]


def test_several_inputs_into_a_folder(tmp_path):
    imgs = {f"d{i}.png": digit(10 + i) for i in range(3)}
    for name, img in imgs.items():
        (tmp_path / name).write_bytes(encode_png(img))
    r = pcz("compress", *imgs, "-o", "packed/", "-j", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["d0.pcz", "d1.pcz", "d2.pcz"]
    r = pcz("decompress", *(f"packed/d{i}.pcz" for i in range(3)), "-o", "back/", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for i in range(3):
        assert np.array_equal(read_image(tmp_path / "back" / f"d{i}.decoded.png"), imgs[f"d{i}.png"])
    r = pcz("compress", "d0.png", "d1.png", "-o", "one.pcz", cwd=tmp_path)
    assert r.returncode == 2 and b"FOLDER/" in r.stderr


def test_model_names_and_a_badly_fitting_model(tmp_path):
    noise = np.random.default_rng(4).integers(0, 256, (40, 36), dtype=np.uint8)
    (tmp_path / "n.png").write_bytes(encode_png(noise))
    r = pcz("compress", "n.png", "-m", "bogus", cwd=tmp_path)
    assert r.returncode == 2 and b"mnist, natural-gray, natural-rgb" in r.stderr
    r = pcz("compress", "n.png", "-m", "mnist", cwd=tmp_path)  # a 28x28 digit model on another image
    assert r.returncode == 0 and b"warning: model 'mnist'" in r.stderr and b"natural-gray" in r.stderr
    r = pcz("info", "n.pcz", cwd=tmp_path)
    assert b'"model": "mnist"' in r.stdout
