"""Corrupt containers raise only the typed errors -- never anything else, never garbage."""
import numpy as np
import pytest

from neural_codecs import bitstream as bs
from test_golden import sample

N_FLIPS = 1500


def _decode_everything(data: bytes):
    """What a codec does with a file: read and check the container, then decode the payloads."""
    header, items = bs.read_container(data, name="fuzz.ncf")
    bs.Decoder(items[0]).decode_categorical(sample.categorical_model())
    table, _ = bs.CdfTable.from_bytes(items[2])
    v, idx = sample.factorized_values()
    bs.decode_factorized(items[1], table, idx)
    r = bs.ContainerReader(data)
    for i in range(len(r)):
        r.item(i)


def test_golden_is_sane():
    _decode_everything(sample.PATH.read_bytes())


def test_every_truncation_raises_a_typed_error():
    data = sample.PATH.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(bs.BitstreamError):
            _decode_everything(data[:cut])


def test_random_byte_flips_raise_typed_errors():
    data = sample.PATH.read_bytes()
    rng = np.random.default_rng(2026)
    caught = 0
    for _ in range(N_FLIPS):
        bad = bytearray(data)
        pos = int(rng.integers(len(data)))
        bad[pos] ^= int(rng.integers(1, 256))
        # CRC-32 detects every error confined to 32 bits, so a single corrupted byte never passes.
        with pytest.raises(bs.BitstreamError):
            _decode_everything(bytes(bad))
        caught += 1
    assert caught == N_FLIPS


def test_random_multi_byte_damage_raises_only_typed_errors():
    data = sample.PATH.read_bytes()
    rng = np.random.default_rng(7)
    for _ in range(500):
        bad = bytearray(data)
        for pos in rng.integers(0, len(data), int(rng.integers(2, 20))):
            bad[int(pos)] = int(rng.integers(256))
        if rng.random() < 0.3:  # splice: insert or delete a run of bytes
            a = int(rng.integers(len(bad)))
            bad[a:a + int(rng.integers(0, 8))] = rng.bytes(int(rng.integers(0, 8)))
        try:
            _decode_everything(bytes(bad))
        except bs.BitstreamError:
            pass
