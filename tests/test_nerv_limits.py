"""nervcodec decoder limits: forged headers are refused from the header alone, promptly,
and decode once the caller raises the limit they are over."""
import json
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from neural_codecs import bitstream as bs
from neural_codecs.codec import nerv
from neural_codecs.models.inr import FitOptions
from test_nerv import tiny_clip


@pytest.fixture(scope="module")
def files():
    clip = tiny_clip(T=4, H=16, W=16)
    opts = FitOptions(epochs=1, batch=2)
    return {k: nerv.encode(clip, 25, model=k, size=2000, options=opts, group=2).data for k in nerv.KINDS}


def forge(data: bytes, count=None, size=None, **config) -> bytes:
    """The same chunks under a header that says something else (config fields, count, frame size)."""
    r = bs.ContainerReader(data, extra_critical=nerv.CHUNK_TYPES)
    h = r.header
    doc = json.loads(h.params)
    doc["config"].update(config)
    W, H = size or (h.width, h.height)
    if size:
        doc["config"].update(width=W, height=H)
    h2 = bs.Header(kind=h.kind, width=W, height=H, channels=3, count=count or h.count, fps=Fraction(25),
                   params=json.dumps(doc).encode())
    return bs.write_container(h2, [(c.type, c.body) for c in r.chunks()])


def refused_fast(data: bytes, limits=nerv.DEFAULT_LIMITS) -> str:
    t = time.perf_counter()
    with pytest.raises(bs.AbsurdSizeError) as e:
        nerv.NervReader(data, "forged.nerv", limits)
    assert time.perf_counter() - t < 1.0
    return str(e.value)


def test_a_million_nirvana_layers_are_refused_before_building(files):
    msg = refused_fast(forge(files["nirvana"], layers=1 << 20))
    assert "layers" in msg and msg.startswith("forged.nerv: ")


@pytest.mark.parametrize("kind", nerv.KINDS)
def test_huge_frames_are_refused_and_decode_with_the_limit_raised(files, kind):
    assert "--max-pixels" in refused_fast(forge(files[kind], size=(8192, 8192)))
    big = forge(files[kind], size=(2048, 4096 + 16))
    refused_fast(big)
    with nerv.NervReader(big, limits=nerv.Limits(max_pixels=1 << 24, max_params=1 << 28)) as r:  # accepted
        assert (r.width, r.height) == (2048, 4096 + 16)


def test_frame_counts_and_clip_output_have_limits(files):
    data = files["nervpp"]  # stores nothing per frame: a few KB can truly declare any count
    assert "frame count" in refused_fast(forge(data, count=1 << 30))
    assert "frames x pixels" in refused_fast(forge(data, count=1 << 20), nerv.Limits(max_output=1 << 20))
    with nerv.NervReader(forge(data, count=1 << 21), limits=nerv.Limits(max_frames=1 << 22)) as r:
        assert r.count == 1 << 21


def test_network_size_has_a_limit(files):
    assert "network parameters" in refused_fast(forge(files["hnerv"], c0=4000))
    assert "c0" in refused_fast(forge(files["hnerv"], c0=5000))  # a field past its bound: not even built


def test_the_cli_refuses_in_one_line_and_obeys_raised_limits(files, tmp_path):
    bomb = tmp_path / "bomb.nerv"
    bomb.write_bytes(forge(files["nervpp"], count=1 << 21))
    cli = [sys.executable, "-m", "neural_codecs.codec.cli.nerv"]
    r = subprocess.run(cli + ["decode", str(bomb), "-o", str(tmp_path / "out.mp4")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--max-frames" in r.stderr
    assert not (tmp_path / "out.mp4").exists()
    r = subprocess.run(cli + ["info", str(bomb), "--max-frames", "2^22", "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["frames"] == 1 << 21


def test_v3_description_takes_the_frame_size_from_the_header(files):
    """A v3 header's description leaves out the frame size and pixel format (the container header
    holds the size; the format is rgb24); one that does state them must agree."""
    data = files["hnerv"]
    doc = json.loads(bs.ContainerReader(data, extra_critical=nerv.CHUNK_TYPES).header.params)
    assert doc["v"] == 3 and "pix_fmt" not in doc and not {"height", "width"} & set(doc["config"])
    with nerv.NervReader(data) as r:
        assert (r.config.height, r.config.width) == (r.height, r.width) == (16, 16)
    with pytest.raises(nerv.NervError, match="disagree on the frame size"):
        nerv.NervReader(forge(data, height=32))
    r = bs.ContainerReader(data, extra_critical=nerv.CHUNK_TYPES)
    bad = bs.Header(kind=r.header.kind, width=16, height=16, channels=3, count=r.header.count, fps=Fraction(25),
                    params=json.dumps({**doc, "pix_fmt": "yuv420p"}).encode())
    with pytest.raises(nerv.NervError, match="pixel format"):
        nerv.NervReader(bs.write_container(bad, [(c.type, c.body) for c in r.chunks()]))
