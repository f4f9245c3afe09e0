"""The committed golden container must keep decoding, and re-encoding must give the same bytes."""

import numpy as np

from neural_codecs import bitstream as bs

import sample  # noqa: E402

GOLDEN_SHA256 = "ba130257315501b5fa613c8fdb04de7194c32ccc9b96417b2250cbe4fc639170"


def test_golden_decodes():
    data = sample.PATH.read_bytes()
    header, items = bs.read_container(data)
    assert header == sample.HEADER
    assert len(items) == 3
    dec = bs.Decoder(items[0])
    assert np.array_equal(dec.decode_categorical(sample.categorical_model()), sample.categorical_symbols())
    v, idx = sample.factorized_values()
    table, used = bs.CdfTable.from_bytes(items[2])
    assert used == len(items[2])
    assert np.array_equal(table.cdf, sample.factorized_model().cdf)
    assert np.array_equal(bs.decode_factorized(items[1], table, idx), v)
    assert bs.ContainerReader(data).texts() == {"encoder": "neural-codecs golden sample"}


def test_golden_reencodes_byte_exactly():
    import hashlib

    data = sample.PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256
    assert sample.build() == data
