"""bitstream: the container format and the entropy-coding layer shared by every codec.

Imports nothing else of this library. See ``FORMAT.md`` for the byte layout and
``python -m neural_codecs.bitstream FILE`` to inspect any container.
"""
from .container import (
    BATCH,
    HEADER,
    ITEM,
    SIGNATURE,
    TEXT,
    VERSION,
    Chunk,
    ChunkInfo,
    CodecKind,
    ContainerReader,
    ContainerWriter,
    Header,
    container_overhead,
    encode_batch,
    model_hash,
    pack_items,
    read_container,
    text_chunk,
    write_container,
)
from .entropy import (
    CdfTable,
    CodingReport,
    Decoder,
    Encoder,
    PayloadError,
    decode_categorical,
    decode_factorized,
    encode_categorical,
    encode_factorized,
    quantize_probabilities,
)
from .errors import (
    AbsurdSizeError,
    BadSignatureError,
    BitstreamError,
    CodecError,
    CRCMismatchError,
    MalformedError,
    ModelMismatchError,
    OutputExistsError,
    TruncatedError,
    UnknownCriticalChunkError,
    UnsupportedVersionError,
)
from .npzfile import read_npz
from .safeio import atomic_output, atomic_write, check_output, check_size, read_limited

__all__ = [name for name in dir() if not name.startswith("_")]
