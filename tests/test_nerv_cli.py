"""nervcodec command line: encode → decode → eval on a tiny clip; one-line errors, exit 2, nothing written."""
import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from neural_codecs.codec.cli.nerv import main
from neural_codecs.codec.io.video import read_video, write_video
from conftest import ROOT
from test_nerv import tiny_clip

FAST = ["--epochs", "2", "--size", "4k", "--device", "cpu", "-q"]


def nervcodec(*args):
    """Run the CLI in this process (torch is imported once); returns what a subprocess run would."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("nervcodec: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    path = d / "clip.mkv"
    write_video(path, tiny_clip(T=5, H=24, W=32), 24, lossless=True)
    return path


def test_encode_decode_eval_info(clip_file, tmp_path):
    out = tmp_path / "c.nerv"
    r = nervcodec("encode", clip_file, "-o", out, "--model", "nirvana", "--group", "3", *FAST)
    assert r.returncode == 0, r.stderr
    assert out.exists() and r.stderr == ""
    r = nervcodec("info", out, "--json")
    d = json.loads(r.stdout)
    assert d["model"] == "nirvana" and d["frames"] == 5 and d["fps"] == "24"
    r = nervcodec("decode", out, "-o", tmp_path / "back.mkv", "--lossless")
    assert r.returncode == 0, r.stderr
    back = read_video(tmp_path / "back.mkv")
    assert back.frames.shape == (5, 24, 32, 3) and back.fps == 24
    r = nervcodec("decode", out, "-o", tmp_path / "frames/")
    assert r.returncode == 0, r.stderr
    pngs = read_video(tmp_path / "frames", fps=24)
    assert np.array_equal(pngs.frames, back.frames)  # both lossless: the same decoded frames
    r = nervcodec("decode", out, "--frame", "3", "-o", tmp_path / "one/")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(read_video(tmp_path / "one").frames[0], back.frames[3])
    assert [f.name for f in (tmp_path / "one").iterdir()] == ["frame_000003.png"]  # named by its index
    r = nervcodec("decode", out, "--lossless")  # default output: beside the input, never its source
    assert r.returncode == 0, r.stderr
    assert np.array_equal(read_video(tmp_path / "c.decoded.mkv").frames, back.frames)
    r = nervcodec("eval", clip_file, out)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["frames"] == 5 and e["psnr-rgb"] > 5 and 0 < e["ms-ssim-rgb"] <= 1
    assert e["bytes"] == out.stat().st_size
    r = nervcodec("eval", clip_file, tmp_path / "back.mkv")
    assert r.returncode == 0 and abs(json.loads(r.stdout)["psnr-rgb"] - e["psnr-rgb"]) < 1e-6


def test_encode_refuses_to_overwrite_and_never_clobbers_the_input(clip_file, tmp_path):
    out = tmp_path / "x.nerv"
    out.write_bytes(b"keep")
    assert_one_line_error(nervcodec("encode", clip_file, "-o", out, *FAST), "already exists")
    assert out.read_bytes() == b"keep"
    before = clip_file.read_bytes()
    assert_one_line_error(nervcodec("encode", clip_file, "-o", clip_file, "--force", *FAST), "input")
    assert clip_file.read_bytes() == before


def test_bad_inputs(tmp_path, clip_file):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for src, frag in ((text, "notes.mp4"), (empty, "empty"), (tmp_path / "missing.mp4", "missing.mp4")):
        out = tmp_path / "o.nerv"
        assert_one_line_error(nervcodec("encode", src, "-o", out, *FAST), frag)
        assert not out.exists()
    # past the last frame: zero frames selected
    assert_one_line_error(nervcodec("encode", clip_file, "--start", "99", "-o", tmp_path / "z.nerv", *FAST))
    assert not (tmp_path / "z.nerv").exists()
    # a NIRVANA-only option on another model is refused, not silently ignored
    r = nervcodec("encode", clip_file, "-o", tmp_path / "h.nerv", "--target-psnr", "30", *FAST)
    assert_one_line_error(r, "--target-psnr", "nirvana")
    assert not (tmp_path / "h.nerv").exists()


def test_corrupt_and_truncated_nerv_files(tmp_path, clip_file):
    good = tmp_path / "g.nerv"
    assert nervcodec("encode", clip_file, "-o", good, "--model", "nervpp", *FAST).returncode == 0
    data = good.read_bytes()
    cases = {"trunc.nerv": data[: len(data) // 2], "flip.nerv": data[:60] + bytes([data[60] ^ 4]) + data[61:],
             "empty.nerv": b"", "png.nerv": (ROOT / "tests/golden/tiny_rgb.pcz").read_bytes()}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        out = tmp_path / f"{name}.mkv"
        assert_one_line_error(nervcodec("decode", tmp_path / name, "-o", out), name)
        assert not out.exists()
        assert_one_line_error(nervcodec("info", tmp_path / name), name)
    assert_one_line_error(nervcodec("decode", good, "--frame", "9", "-o", tmp_path / "f/"), "out of range")
    assert not (tmp_path / "f").exists()
    assert_one_line_error(nervcodec("decode", good, "-o", tmp_path / "x.gif"), "x.gif")
    assert not (tmp_path / "x.gif").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_help_teaches():
    r = subprocess.run([sys.executable, "-m", "neural_codecs.codec.cli.nerv", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "examples:" in r.stdout and "nervcodec decode" in r.stdout
    r = nervcodec("encode", "--help")
    assert "--bpp" in r.stdout and "--lam" in r.stdout and "--device" in r.stdout


def test_decode_from_stdin_to_stdout(tmp_path):
    """``nervcodec decode - < clip.nerv > clip.y4m``: a pipe in, YUV4MPEG2 out, nothing on disk."""
    from conftest import GOLDEN

    data = (GOLDEN / "nerv_tiny_v3.nerv").read_bytes()
    r = subprocess.run([sys.executable, "-m", "neural_codecs.codec.cli.nerv", "decode", "-"], input=data,
                       capture_output=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"YUV4MPEG2 ") and list(tmp_path.iterdir()) == []
    (tmp_path / "back.y4m").write_bytes(r.stdout)
    back = read_video(tmp_path / "back.y4m")
    expect = np.load(GOLDEN / "nerv_tiny_v3_frames.npy")
    assert back.frames.shape == expect.shape
