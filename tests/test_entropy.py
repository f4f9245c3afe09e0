import hashlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from neural_codecs import bitstream as bs
from neural_codecs.bitstream.entropy import PRECISION, MAX_VALUE_BITS


def _sample(p, rng):
    cs = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    return np.minimum((cs < rng.random((len(p), 1))).sum(1), p.shape[1] - 1)


def test_overhead_1e5_symbols_at_most_0_1_percent():
    """The acceptance bound: coded size within 0.1 % (plus a few bytes) of -sum(log2 p)."""
    rng = np.random.default_rng(0)
    for K, alpha in ((256, 0.1), (256, 1.0), (2, 0.05)):
        p = rng.dirichlet(np.full(K, alpha), size=100_000)
        s = _sample(p, rng)
        enc = bs.Encoder()
        enc.encode_categorical(s, p)
        data = enc.to_bytes()
        rep = enc.report()
        assert rep.actual_bits == 8 * len(data)
        assert rep.actual_bits <= rep.ideal_bits * 1.001 + 64, (K, alpha, rep)
        assert np.array_equal(bs.Decoder(data).decode_categorical(p), s)


def test_quantization_is_pinned():
    """Bit-exact rule: a fixed input must give these exact frequencies on every machine."""
    p = np.array([[0.5, 0.25, 0.125, 0.125], [1.0, 0.0, 0.0, 0.0], [1e-300, 3.0, 1e-30, 2.0]])
    f = bs.quantize_probabilities(p)
    T = 1 << PRECISION
    assert f.sum(1).tolist() == [T] * 3
    assert f[0].tolist() == [8388608, 4194304, 2097152, 2097152]
    assert f[1].tolist() == [T - 3, 1, 1, 1]
    assert f[2, 0] == 1 and f[2, 2] == 1
    x = np.arange(4096, dtype=np.float64).reshape(16, 256) / 4095
    x = x * x * x  # IEEE multiplications only
    digest = hashlib.sha256(bs.quantize_probabilities(x).astype("<i8").tobytes()).hexdigest()
    assert digest == QUANT_DIGEST


QUANT_DIGEST = "2e4a2868612e76d8b464ddb7b97e0fc1cf13c4841637c264cec86c833cfd6667"


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(2, 300)),
                  elements=st.floats(0, 1e6, allow_nan=False)))
def test_quantization_never_zero(p):
    p[:, 0] += 1e-3  # rows must have positive mass
    f = bs.quantize_probabilities(p)
    assert (f >= 1).all()
    assert (f.sum(1) == 1 << PRECISION).all()
    # Order-preserving up to the remainder: a larger probability never gets fewer counts
    # (except the symbol that absorbed the remainder, which only gains).
    q = p / p.sum(1, keepdims=True)
    for row_p, row_f in zip(q, f):
        i, j = np.argmax(row_p), np.argmin(row_p)
        assert row_f[i] >= row_f[j]


@given(st.integers(0, 2**32 - 1), st.integers(1, 200), st.integers(2, 40), st.booleans())
def test_categorical_roundtrip_property(seed, n, K, float32):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(K, 0.3), size=n)
    p[rng.random(p.shape) < 0.3] = 0.0  # zero mass still codable
    p[:, 0] += 1e-9
    if float32:
        p = p.astype(np.float32)
    s = rng.integers(0, K, n)  # including symbols the model called impossible
    data = bs.encode_categorical(s, p)
    assert np.array_equal(bs.decode_categorical(data, p), s)


def test_several_calls_share_one_stream():
    rng = np.random.default_rng(1)
    p1, p2 = rng.random((10, 5)) + 0.01, rng.random((7, 300)) + 0.01
    s1, s2 = rng.integers(0, 5, 10), rng.integers(0, 300, 7)
    table = bs.CdfTable.from_pmfs([np.ones(5)], offsets=[-2])
    v = rng.integers(-10, 10, 30)
    enc = bs.Encoder()
    enc.encode_categorical(s1, p1)
    enc.encode_factorized(v, table, np.zeros(30, dtype=int))
    enc.encode_categorical(s2, p2)
    dec = bs.Decoder(enc.to_bytes())
    assert np.array_equal(dec.decode_categorical(p1), s1)
    assert np.array_equal(dec.decode_factorized(table, np.zeros(30, dtype=int)), v)
    assert np.array_equal(dec.decode_categorical(p2), s2)


def _laplace_table(R, half=8, tail=1e-3):
    x = np.arange(-half, half + 1)
    pmfs = [np.exp(-np.abs(x) / (r + 0.5)) for r in range(R)]
    pmfs = [p / p.sum() * (1 - tail) for p in pmfs]
    return bs.CdfTable.from_pmfs(pmfs, offsets=[-half] * R, tail_mass=[tail] * R)


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 300))
def test_factorized_roundtrip_with_escapes(seed, R, n):
    rng = np.random.default_rng(seed)
    table = _laplace_table(R)
    idx = rng.integers(0, R, n)
    v = np.round(rng.laplace(size=n) * 4).astype(np.int64)
    big = rng.random(n) < 0.05
    v[big] = rng.integers(-(1 << (MAX_VALUE_BITS - 1)), 1 << (MAX_VALUE_BITS - 1), big.sum())
    v[rng.random(n) < 0.02] = (1 << MAX_VALUE_BITS) - 1
    v[rng.random(n) < 0.02] = -(1 << MAX_VALUE_BITS) + 1
    data = bs.encode_factorized(v, table, idx)
    assert np.array_equal(bs.decode_factorized(data, table, idx), v)


def test_factorized_shapes_and_report():
    table = _laplace_table(4)
    rng = np.random.default_rng(3)
    v = np.round(rng.laplace(size=(2, 4, 16, 16)) * 2).astype(np.int32)
    idx = np.broadcast_to(np.arange(4)[None, :, None, None], v.shape)
    enc = bs.Encoder()
    enc.encode_factorized(v, table, idx)
    rep = enc.report()
    assert rep.n_symbols == v.size
    assert rep.ideal_bits < rep.actual_bits <= rep.ideal_bits * 1.01 + 64
    out = bs.Decoder(enc.to_bytes()).decode_factorized(table, idx)
    assert out.shape == v.shape and np.array_equal(out, v)
    with pytest.raises(ValueError):
        enc.encode_factorized(np.array([1 << MAX_VALUE_BITS]), table, np.array([0]))
    with pytest.raises(ValueError):
        enc.encode_factorized(np.array([1]), table, np.array([4]))


def test_table_serialisation_and_validation():
    table = _laplace_table(3)
    data = table.to_bytes()
    back, used = bs.CdfTable.from_bytes(data + b"rest")
    assert used == len(data)
    assert np.array_equal(back.cdf, table.cdf) and np.array_equal(back.offsets, table.offsets)
    for cut in range(len(data)):
        with pytest.raises(bs.BitstreamError):
            bs.CdfTable.from_bytes(data[:cut], name="t")
    with pytest.raises(ValueError):
        bs.CdfTable(np.array([[0, 5, 5, 1 << 16]]), [3], [0])  # a zero-mass symbol
    with pytest.raises(ValueError):
        bs.CdfTable(np.array([[0, 1 << 16]]), [1], [0])  # no room for the escape


def test_decoder_on_garbage_raises_only_payload_errors():
    rng = np.random.default_rng(5)
    table = _laplace_table(2)
    p = rng.random((50, 16)) + 0.01
    for _ in range(300):
        junk = rng.bytes(int(rng.integers(0, 40)))
        try:
            bs.Decoder(junk).decode_categorical(p)
            bs.Decoder(junk).decode_factorized(table, rng.integers(0, 2, 64))
        except bs.BitstreamError:
            pass


def test_bad_model_inputs_are_value_errors():
    with pytest.raises(ValueError):
        bs.quantize_probabilities(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError):
        bs.quantize_probabilities(np.array([[0.0, 0.0]]))
    with pytest.raises(ValueError):
        bs.quantize_probabilities(np.array([[-1.0, 2.0]]))
    with pytest.raises(ValueError):
        bs.encode_categorical([3], np.ones((1, 3)))
    with pytest.raises(TypeError):
        bs.quantize_probabilities(np.ones((1, 3), dtype=int))


def test_coder_model_matches_format_md():
    """FORMAT.md section 9 step 3: L_k = floor(C_k (T-K) / T) + k. With c = [1, 1, T-2] that gives
    symbol 1 a frequency of 2, so it costs 23 bits, not 24."""
    T = 1 << PRECISION
    p = np.tile(np.array([1.0, 1.0, T - 2.0]), (1000, 1))
    enc = bs.Encoder()
    enc.encode_categorical(np.ones(1000, int), p)
    assert 23000 <= 8 * len(enc.to_bytes()) <= 23000 + 64
    # An all-zero stream is stored as nothing at all (trailing zeros are dropped) and still decodes.
    p = np.tile(np.array([1.0, T - 1.0]), (1000, 1))
    data = bs.encode_categorical(np.zeros(1000, int), p)
    assert data == b""
    assert not bs.decode_categorical(data, p).any()


def test_threaded_and_serial_kernels_keep_separate_numba_caches():
    """Two njit wrappers of one function share numba's cache index, and a process could then load
    the serial machine code for the threaded dispatcher (pcz ran on one core that way)."""
    from neural_codecs.bitstream.entropy import _quantize_rows_par, _quantize_rows_ser
    from neural_codecs.models.pc.coder import _fast_step_par, _fast_step_ser

    def index(d):
        return d._cache._cache_file._index_path

    assert index(_quantize_rows_par) != index(_quantize_rows_ser)
    assert index(_fast_step_par) != index(_fast_step_ser)
    assert _fast_step_par.targetoptions.get("parallel") and not _fast_step_ser.targetoptions.get("parallel")
