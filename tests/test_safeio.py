import os

import pytest

from neural_codecs import bitstream as bs
from neural_codecs.bitstream.safeio import _umask


def test_atomic_write_and_force(tmp_path):
    out = tmp_path / "a.bin"
    bs.atomic_write(out, b"one")
    assert out.read_bytes() == b"one"
    with pytest.raises(bs.OutputExistsError, match="--force"):
        bs.atomic_write(out, b"two")
    assert out.read_bytes() == b"one"
    bs.atomic_write(out, b"two", force=True)
    assert out.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]  # no temporary files left
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # like any new file, not mkstemp's 0600


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "b.bin"
    with pytest.raises(KeyboardInterrupt):
        with bs.atomic_output(out) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_never_overwrites_an_input(tmp_path):
    inp = tmp_path / "in.png"
    inp.write_bytes(b"precious")
    with pytest.raises(bs.OutputExistsError, match="same file as an input"):
        bs.atomic_write(inp, b"x", force=True, inputs=[inp])
    link = tmp_path / "alias.png"
    os.link(inp, link)
    with pytest.raises(bs.OutputExistsError):
        bs.atomic_write(link, b"x", force=True, inputs=[inp])
    assert inp.read_bytes() == b"precious"
    with pytest.raises(bs.OutputExistsError, match="directory"):
        bs.check_output(tmp_path, force=True)


def test_size_checks(tmp_path):
    with pytest.raises(bs.AbsurdSizeError, match="width 5 is beyond the limit 4"):
        bs.check_size(5, 4, "width", "f.png")
    f = tmp_path / "big"
    f.write_bytes(bytes(100))
    assert len(bs.read_limited(f, 100)) == 100
    with pytest.raises(bs.AbsurdSizeError):
        bs.read_limited(f, 99)
