"""Model files are read from the zip directory first (bitstream.npzfile.read_npz): unknown arrays
and oversized members are refused before any member is read; random bytes get our own message."""
import io
import shutil
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from neural_codecs import bitstream as bs
from neural_codecs.bitstream.npzfile import read_npz
from neural_codecs.codec import pcz, split


def add_member(path, key: str, array_bytes: int) -> None:
    """Append a compressed all-zero float array of ``array_bytes`` to the npz at ``path``
    (a few hundred KB on disk, ``array_bytes`` once read)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(array_bytes // 8))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(key + ".npy", buf.getvalue())


def cheaply(fn, seconds=1.0, megabytes=16):
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(bs.BitstreamError) as info:
            fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t < seconds
    assert peak < megabytes << 20, f"peak {peak / 2**20:.0f} MiB"
    return str(info.value)


def test_pcz_model_with_an_unknown_array_refused_before_reading(tmp_path):
    path = tmp_path / "m.npz"
    shutil.copy(pcz.shipped_model_path("natural-gray"), path)
    pcz.PczModel.load(path)  # the copy loads
    add_member(path, "extra", 256 << 20)
    msg = cheaply(lambda: pcz.PczModel.load(path))
    assert "unexpected member 'extra.npy'" in msg and str(path) in msg


def test_oversized_known_member_refused_from_the_directory(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, emit=np.zeros(1000), format=np.int64(1))
    with pytest.raises(pcz.ModelFileError, match="over the limit"):
        pcz.PczModel.load(path, max_member=4000)
    with pytest.raises(bs.BitstreamError, match="together"):
        read_npz(path, {"emit", "format"}, max_total=8000)


def test_split_model_with_an_unknown_array_refused_before_reading(tmp_path):
    path = tmp_path / "edge.npz"
    shutil.copy(split.model_path(split.DEFAULT, "edge.npz"), path)
    split.EdgeModel.load(path)
    add_member(path, "extra", 256 << 20)
    msg = cheaply(lambda: split.EdgeModel.load(path))
    assert "unexpected member" in msg


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(3000), b"", b"\x93NUMPY\x01\x00garbage"])
def test_random_bytes_get_our_own_message(tmp_path, content):
    path = tmp_path / "r.npz"
    path.write_bytes(content)
    for load in (pcz.PczModel.load, split.EdgeModel.load, split.ServerModel.load):
        msg = cheaply(lambda: load(path))
        assert "allow_pickle" not in msg and "not an npz archive" in msg and msg.count("\n") == 0


def test_members_are_checked(tmp_path):
    path = tmp_path / "m.npz"
    # a pickled object array is refused, never unpickled
    with zipfile.ZipFile(path, "w") as z:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        z.writestr("info.npy", buf.getvalue())
    with pytest.raises(pcz.ModelFileError, match="pickled objects are never loaded"):
        pcz.PczModel.load(path)
    # a header that declares more than its bytes: numpy would allocate the declared shape
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(4))
    forged = buf.getvalue().replace(b"(4,), }" + b" " * 12, b"(1099511627776,), }")  # same header length
    assert len(forged) == len(buf.getvalue())
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("emit.npy", forged)
    msg = cheaply(lambda: pcz.PczModel.load(path))
    assert "declares (1099511627776,) float64 but holds 32 bytes" in msg
    # not a .npy member at all
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("emit", b"x")
    with pytest.raises(pcz.ModelFileError, match="unexpected member"):
        pcz.PczModel.load(path)


def test_arrays_roundtrip(tmp_path):
    path = tmp_path / "ok.npz"
    arrays = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": np.array("text"), "c": np.asfortranarray(np.eye(3)),
              "p.x": np.float32(2.5)}
    np.savez_compressed(path, **arrays)
    got = read_npz(path, {"a", "b", "c"}, ("p.",))
    assert got.keys() == arrays.keys()
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "missing.npz", {"a"})
    with pytest.raises(IsADirectoryError):
        read_npz(tmp_path, {"a"})


def test_one_content_hash_rule_keeps_every_shipped_name():
    """pcz models keep the legacy rule, split models the canonical one: the shipped models' names,
    which every existing file carries, are unchanged, and re-saving a model does not rename it."""
    import numpy as np

    from neural_codecs.codec import modelfile, pcz, split

    a = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.int64(7)}
    assert modelfile.canonical_bytes(a).startswith(b"a\0<i8\0[1]\0" + np.int64(7).tobytes() + b"b\0<f4\0[2, 3]\0")
    assert modelfile.canonical_bytes(a, "pcz-v1").startswith(b"a|<i8|(1,)|")  # a scalar counts as shape 1
    assert modelfile.content_hash(a) != modelfile.content_hash(a, "pcz-v1")
    m = pcz.load_model("mnist")
    assert m.hash == modelfile.content_hash(m._arrays(), "pcz-v1", skip=("name", "info"))
    edge = split.load_edge()
    assert edge.hash == modelfile.content_hash(edge.arrays())


def test_resaving_keeps_the_hash(tmp_path):
    from neural_codecs.codec import pcz, split

    m = pcz.load_model("mnist")
    m.save(tmp_path / "m.npz")
    assert pcz.load_model(str(tmp_path / "m.npz")).hash == m.hash
    edge = split.load_edge()
    edge.save(tmp_path / "e.npz")  # saved compressed now; the shipped file is not
    assert split.load_edge(tmp_path / "e.npz").hash == edge.hash
