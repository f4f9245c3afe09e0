"""Command-line behaviour: one-line errors with exit status 2, the inspect command, the demo."""
import json
import subprocess
import sys

import pytest

from conftest import GOLDEN, ROOT


def run(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd or ROOT)


def test_inspect_golden():
    r = run("-m", "neural_codecs.bitstream", str(GOLDEN / "sample.ncf"))
    assert r.returncode == 0, r.stderr
    assert "codec generic" in r.stdout and "24000/1001" in r.stdout and "all CRCs ok" in r.stdout
    r = run("-m", "neural_codecs.bitstream", "--json", str(GOLDEN / "sample.ncf"))
    d = json.loads(r.stdout)
    assert d["items"] == 3 and d["archive"] and [c["type"] for c in d["chunks"]] == ["H", "t", "B", "B"]


def test_inspect_bad_files(tmp_path):
    data = (GOLDEN / "sample.ncf").read_bytes()
    cases = {"trunc.ncf": data[:-3], "flip.ncf": data[:50] + bytes([data[50] ^ 1]) + data[51:],
             "text.ncf": b"hello world", "empty.ncf": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        r = run("-m", "neural_codecs.bitstream", str(tmp_path / name))
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith(f"bitstream: error: {tmp_path / name}: ")
    r = run("-m", "neural_codecs.bitstream", str(tmp_path / "missing.ncf"))
    assert r.returncode == 2 and "missing.ncf" in r.stderr and "Traceback" not in r.stderr


def test_quickstart_demo(tmp_path):
    r = run(str(ROOT / "tools" / "quickstart.py"), "-o", str(tmp_path), "--skip-pcz", "--skip-nerv")
    assert r.returncode == 0, r.stderr
    assert "PNG" in r.stdout and (tmp_path / "camera.ncf").exists()
    assert "splitcodec" in r.stdout and (tmp_path / "chelsea.split").exists()  # the shipped split models
    r = run(str(ROOT / "tools" / "quickstart.py"), "-o", str(tmp_path), "--skip-pcz", "--skip-nerv")  # refuses to overwrite
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr


def test_quickstart_parts_on_small_inputs(tmp_path, capsys):
    """Each part of the demo, on inputs small enough for the default tier (the whole demo, about
    a minute and a half, runs in the slow tier)."""
    import numpy as np
    import quickstart
    from skimage import data as skdata

    from neural_codecs.codec import pcz

    if not all(pcz.shipped_model_path(k).exists() for k in ("natural-gray", "natural-rgb")):
        pytest.skip("shipped natural-image models not built")
    quickstart.demo_pcz(tmp_path, False, [("camera crop", skdata.camera()[200:248, 200:264]),
                                          ("astronaut crop", skdata.astronaut()[:20, 200:230])])
    quickstart.demo_nerv(tmp_path, False, clip=quickstart.demo_clip(frames=4, width=32, height=24), epochs=1)
    out = capsys.readouterr().out
    assert out.count("bit-exact") == 2 and (tmp_path / "camera.pcz").exists()
    assert "pan.nerv" in out and "x264 crf" in out and (tmp_path / "pan.nerv").exists()
    clip = quickstart.demo_clip()
    assert clip.shape == (48, 96, 128, 3) and clip.dtype == np.uint8
    assert not np.array_equal(clip[0], clip[-1])  # it pans


@pytest.mark.slow
def test_quickstart_whole_demo(tmp_path):
    from neural_codecs.codec import pcz

    if not all(pcz.shipped_model_path(k).exists() for k in ("natural-gray", "natural-rgb")):
        pytest.skip("shipped natural-image models not built")
    r = run(str(ROOT / "tools" / "quickstart.py"), "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "bit-exact" in r.stdout and (tmp_path / "camera.pcz").exists() and (tmp_path / "pan.nerv").exists()


def test_readme_snippets_run(tmp_path):
    text = (ROOT / "README.md").read_text()
    snippets = [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]
    assert len(snippets) >= 2
    for snippet in snippets:
        r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, (snippet, r.stderr)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "test-command" in ci
    text = (ROOT / "README.md").read_text()
    line = text.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "pytest" in line and "pip install" in line


def test_nonsensical_counts_are_usage_errors(tmp_path):
    """Zero epochs, K = 0, a negative port ...: one usage line and exit 2 from argparse, before any
    work starts (they used to surface as tracebacks from deep inside)."""
    for prog, args, frag in (("neural_codecs.codec.cli.pcz", ["train", "x.png", "-o", "m.npz", "-K", "0"], "-K: 0 is below 1"),
                             ("neural_codecs.codec.cli.pcz", ["compress", "x.png", "-j", "0"], "-j/--jobs: 0 is below 1"),
                             ("neural_codecs.codec.cli.nerv", ["encode", "x.mp4", "--epochs", "0"], "--epochs: 0 is below 1"),
                             ("neural_codecs.codec.cli.nerv", ["decode", "x.nerv", "--crf", "60"], "60 is outside 0..51"),
                             ("neural_codecs.codec.cli.split", ["serve", "--port", "-5"], "-5 is outside 0..65535"),
                             ("neural_codecs.codec.cli.nerv", ["encode", "x.mp4", "--bpp", "nan"], "not a finite number > 0"),
                             ("neural_codecs.codec.cli.pcz", ["train", "x.png", "-o", "m.npz", "--pseudocount", "-1"], ">= 0"),
                             ("neural_codecs.codec.cli.pcz", ["train", "x.png", "-o", "m.npz", "--inertia", "0.5", "1"], "not below 1"),
                             ("neural_codecs.codec.cli.split", ["encode", "x.png"], None)):
        r = run("-m", prog, *args, cwd=tmp_path)
        if frag is None:  # control: a well-formed command fails on the missing file instead
            assert r.returncode == 2 and "x.png" in r.stderr
            continue
        assert r.returncode == 2 and frag in r.stderr and "Traceback" not in r.stderr, (prog, args, r.stderr)
    assert list(tmp_path.iterdir()) == []
