"""The one entropy-coding layer of the library, over constriction's range coder.

Two kinds of entropy *model* drive one *coder* (as in constriction, models and coders are separate):

- **categorical**: one distribution per symbol, given as a float array ``probs`` of shape (n, K) --
  what pcz's per-pixel conditionals produce. Encoder and decoder turn the floats into integer
  frequencies by one fixed rule (:func:`quantize_probabilities`), so the coder sees the same
  integers on every machine provided the model produced the same floats.
- **factorized**: integer tensors under a learned prior given as integer CDF tables
  (:class:`CdfTable`, one row per channel, as CompressAI's ``EntropyBottleneck`` exports them),
  with an escape symbol for values outside a row's range; escaped values are coded exactly
  (Elias-gamma style: bit count, then the bits). This serves the Entropic Student's bottleneck
  and the INR weight coders.

Everything is vectorised: one constriction call per array (or per table row), never per symbol.
A stream is the range coder's 32-bit words, little-endian, with trailing zero bytes removed (the
decoder reads missing bytes as zeros), so a codec pays for no padding.

Codecs call :class:`Encoder` / :class:`Decoder` and never carry a coder of their own.

Its kernels use numba's on-disk cache, which records this module's import name
(``neural_codecs.bitstream.entropy``); a cache written under another name is stale.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import constriction
import numba
import numpy as np

from .errors import AbsurdSizeError, MalformedError, TruncatedError
from .varint import decode_svarint, decode_uvarint, encode_svarint, encode_uvarint

_model = constriction.stream.model
_queue = constriction.stream.queue

#: Fixed-point precision of categorical frequencies (bits); matches constriction's default.
PRECISION = 24
#: Largest alphabet for a categorical model.
MAX_ALPHABET = 1 << 16
#: Escaped (out-of-table) values must satisfy |v| < 2**MAX_VALUE_BITS.
MAX_VALUE_BITS = 40
_ESC_NBITS = 48  # alphabet of the escape's bit count; covers w < 2**48
_ESC_CHUNK = 16  # escape bits are coded 16 at a time

class PayloadError(MalformedError):
    """The entropy-coded payload cannot be decoded (corrupt or not produced by this layer)."""


# ---------------------------------------------------------------------------------------------
# Float -> integer frequency quantization
# ---------------------------------------------------------------------------------------------


def _quantize_rows_body(p, total_count, out_scale):  # pragma: no cover - compiled
    """Rows of nonnegative floats -> integer frequencies summing to ``total_count``, each >= 1.

    One fixed rule, no transcendental functions, a fixed summation order (sequential within a
    row, no fastmath), so the result is the same on every IEEE-754 machine; rows are independent,
    so running them on several threads changes nothing:
    c_k = 1 + floor(p_k * (T - K) / sum(p)); the remainder T - sum(c) goes to the first largest c_k.
    Writes ``c_k * out_scale`` (exact: a power of two) and each row's float total, or -1 for a
    row that is not finite, nonnegative and positive in sum.
    """
    n, K = p.shape
    out = np.empty((n, K), dtype=np.float64)
    totals = np.empty(n, dtype=np.float64)
    for i in numba.prange(n):
        total = 0.0
        ok = True
        for k in range(K):
            v = np.float64(p[i, k])
            if not (v >= 0.0 and v < np.inf):
                ok = False
            total += v
        if not ok or not (total > 0.0 and total < np.inf):
            totals[i] = -1.0
            for k in range(K):
                out[i, k] = 0.0
            continue
        totals[i] = total
        scale = (total_count - K) / total
        s = 0
        best = 0
        bestc = -1
        for k in range(K):
            c = np.int64(np.floor(np.float64(p[i, k]) * scale)) + 1
            out[i, k] = c
            s += c
            if c > bestc:
                bestc = c
                best = k
        out[i, best] += total_count - s
        for k in range(K):
            out[i, k] *= out_scale
    return out, totals


def _compiled_twice(body):
    """(threaded, single-thread) compilations of ``body``, each a renamed copy: numba's on-disk
    cache names its files after a function's qualified name and first line, so two wrappers of one
    function would share cache files and could load each other's machine code (the threaded
    kernel then runs on one core). ``models/pc/kernels.py`` does the same for the circuits' kernels;
    the entropy layer imports nothing of ours, so it keeps this copy."""
    def renamed(suffix):
        g = types.FunctionType(body.__code__, body.__globals__, body.__name__ + suffix, body.__defaults__,
                               body.__closure__)
        g.__qualname__, g.__doc__, g.__module__ = body.__qualname__ + suffix, body.__doc__, body.__module__
        return g
    return (numba.njit(cache=True, nogil=True, parallel=True)(renamed("_par")),
            numba.njit(cache=True, nogil=True)(renamed("_ser")))


# Threads pay off only for many rows; rows are independent, so both versions agree bit for bit.
_quantize_rows_par, _quantize_rows_ser = _compiled_twice(_quantize_rows_body)


def _quantized(probs, precision: int, out_scale: float):
    p = np.asarray(probs)
    if p.dtype.kind != "f":
        raise TypeError("probabilities must be a float array")
    if p.ndim != 2 or not 2 <= p.shape[1] <= MAX_ALPHABET:
        raise ValueError(f"probabilities must have shape (n, K) with 2 <= K <= {MAX_ALPHABET}")
    if p.shape[1] > (1 << precision) // 2:
        raise ValueError("alphabet too large for the precision")
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    kernel = _quantize_rows_par if p.shape[0] * p.shape[1] >= 1 << 16 else _quantize_rows_ser
    out, totals = kernel(np.ascontiguousarray(p), np.int64(1) << precision, out_scale)
    if len(totals) and totals.min() < 0:
        bad = int(np.argmin(totals))
        raise ValueError(f"probability row {bad} is not finite, nonnegative and positive in sum")
    return out, totals


def quantize_probabilities(probs, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies (int64, rows summing to ``2**precision``, every entry >= 1).

    ``probs``: float array (n, K) or (K,), nonnegative and finite, rows need not be normalised.
    Entries of zero still get frequency 1, so every symbol stays encodable.
    """
    p = np.asarray(probs)
    squeeze = p.ndim == 1
    out, _ = _quantized(p.reshape(1, -1) if squeeze else p, precision, 1.0)
    counts = out.astype(np.int64)
    return counts[0] if squeeze else counts


def _coder_probabilities(probs):
    """What constriction receives: the exact fractions c_k / 2**24, and each row's float total."""
    return _quantized(probs, PRECISION, 1.0 / (1 << PRECISION))


# ---------------------------------------------------------------------------------------------
# CDF tables for factorized priors
# ---------------------------------------------------------------------------------------------

MAX_TABLE_ROWS = 1 << 16
MAX_TABLE_SYMBOLS = 1 << 16
#: Default bound on a parsed table's rows x (longest row + 1): the dense ``cdf`` array a table
#: becomes (8 bytes a cell: 64 MiB). Checked before it is allocated; ``from_bytes(max_cells=)``
#: raises it.
MAX_TABLE_CELLS = 1 << 23
TABLE_PRECISION = 16


@dataclass(frozen=True, eq=False)
class CdfTable:
    """Integer CDF tables, one row per channel (or per any index a codec chooses).

    Row ``r`` covers the values ``offsets[r] .. offsets[r] + lengths[r] - 2``; its last symbol
    (``lengths[r] - 1``) is the escape for every other value. ``cdf[r, :lengths[r] + 1]`` rises
    strictly from 0 to ``2**precision``, so every symbol, escape included, has nonzero mass.
    """

    cdf: np.ndarray  # (R, Lmax + 1) int64
    lengths: np.ndarray  # (R,) symbols per row, escape included (>= 2)
    offsets: np.ndarray  # (R,) value of symbol 0
    precision: int = TABLE_PRECISION
    _models: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        cdf = np.ascontiguousarray(self.cdf, dtype=np.int64)
        lengths = np.ascontiguousarray(self.lengths, dtype=np.int64).ravel()
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64).ravel()
        if cdf.ndim != 2 or cdf.shape[0] != len(lengths) or len(offsets) != len(lengths):
            raise ValueError("cdf (R, L+1), lengths (R,) and offsets (R,) must agree")
        if not 1 <= len(lengths) <= MAX_TABLE_ROWS or not 1 <= self.precision <= PRECISION:
            raise ValueError("table size or precision out of range")
        if (lengths < 2).any() or (lengths + 1 > cdf.shape[1]).any() or (lengths > MAX_TABLE_SYMBOLS).any():
            raise ValueError("each row needs 2..65536 symbols (escape included) within the cdf width")
        if (np.abs(offsets) >= 1 << 31).any():
            raise ValueError("offsets must fit in 32 bits")
        top = 1 << self.precision
        inside = np.arange(cdf.shape[1] - 1)[None] < lengths[:, None]  # the steps of each row
        bad = (cdf[:, 0] != 0) | (cdf[np.arange(len(lengths)), lengths] != top) \
            | ((np.diff(cdf, axis=1) <= 0) & inside).any(1)
        if bad.any():
            raise ValueError(f"cdf row {int(np.argmax(bad))} must rise strictly from 0 to 2**precision")
        object.__setattr__(self, "cdf", cdf)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "offsets", offsets)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_pmfs(cls, pmfs, offsets, tail_mass=None, precision: int = TABLE_PRECISION) -> "CdfTable":
        """Build tables from float PMFs (one 1-D array per row, over values ``offsets[r]...``).

        ``tail_mass[r]`` is the probability of leaving the row's range (it becomes the escape
        symbol's mass; 0 by default, which still leaves the escape frequency 1).
        """
        pmfs = [np.asarray(p, dtype=np.float64).ravel() for p in pmfs]
        tails = np.zeros(len(pmfs)) if tail_mass is None else np.asarray(tail_mass, dtype=np.float64).ravel()
        lengths = np.array([len(p) + 1 for p in pmfs], dtype=np.int64)
        cdf = np.zeros((len(pmfs), int(lengths.max()) + 1), dtype=np.int64)
        for r, (p, t) in enumerate(zip(pmfs, tails)):
            freq = quantize_probabilities(np.append(p, t), precision)
            cdf[r, 1:len(freq) + 1] = np.cumsum(freq)
            cdf[r, len(freq) + 1:] = cdf[r, len(freq)]
        return cls(cdf, lengths, np.asarray(offsets, dtype=np.int64), precision)

    def pmf(self, r: int) -> np.ndarray:
        """Integer frequencies of row ``r`` (escape last)."""
        return np.diff(self.cdf[r, :self.lengths[r] + 1])

    def _coder_model(self, r: int):
        m = self._models.get(r)
        if m is None:
            m = _model.Categorical(self.pmf(r).astype(np.float64) / float(1 << self.precision), perfect=False)
            self._models[r] = m
        return m

    # -- serialisation (tables that travel inside a file, e.g. an INR's weight prior) -----------
    def to_bytes(self) -> bytes:
        """Compact form: rows, precision, then per row offset (zigzag), length, frequencies (varints)."""
        out = bytearray(encode_uvarint(self.rows) + bytes([self.precision]))
        for r in range(self.rows):
            out += encode_svarint(int(self.offsets[r])) + encode_uvarint(int(self.lengths[r]))
            for f in self.pmf(r):
                out += encode_uvarint(int(f) - 1)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, name: str | None = None, *,
                   max_cells: int = MAX_TABLE_CELLS) -> tuple["CdfTable", int]:
        """Parse :meth:`to_bytes` output at the start of ``data``; return ``(table, bytes_used)``.

        Work and memory are bounded by the bytes: every frequency takes at least one byte, and the
        dense ``cdf`` (rows x (longest row + 1)) is checked against ``max_cells`` as each row's
        length is read, before the array exists -- an 80 KB table cannot ask for a gigabyte.
        """
        try:
            rows, pos = decode_uvarint(data, 0)
            if not 1 <= rows <= MAX_TABLE_ROWS:
                raise AbsurdSizeError(f"table rows {rows} out of range 1..{MAX_TABLE_ROWS}")
            if 3 * rows > len(data) - pos:  # each row: offset, length, >= 2 frequencies
                raise TruncatedError(f"table of {rows} rows cannot fit in {len(data) - pos} bytes")
            if pos >= len(data):
                raise TruncatedError("table ends before its precision byte")
            precision = data[pos]
            pos += 1
            if not 1 <= precision <= PRECISION:
                raise MalformedError(f"table precision {precision} out of range")
            offsets, lengths, freqs, lmax = [], [], [], 0
            for _ in range(rows):
                off, pos = decode_svarint(data, pos)
                length, pos = decode_uvarint(data, pos)
                if not 2 <= length <= MAX_TABLE_SYMBOLS or length > (len(data) - pos):
                    raise AbsurdSizeError(f"table row length {length} out of range")
                if abs(off) >= 1 << 31:
                    raise MalformedError("table offset out of range")
                lmax = max(lmax, length)
                if rows * (lmax + 1) > max_cells:
                    raise AbsurdSizeError(f"table of {rows} rows up to {lmax} symbols wide: {rows * (lmax + 1)} "
                                          f"cells, over the limit of {max_cells}")
                row = np.empty(length, dtype=np.int64)
                for k in range(length):
                    row[k], pos = decode_uvarint(data, pos)
                row += 1
                if int(row.sum()) != 1 << precision:
                    raise MalformedError("table row frequencies do not sum to 2**precision")
                offsets.append(off)
                lengths.append(length)
                freqs.append(row)
            cdf = np.zeros((rows, lmax + 1), dtype=np.int64)
            for r, f in enumerate(freqs):
                c = np.cumsum(f)
                cdf[r, 1:len(f) + 1] = c
                cdf[r, len(f) + 1:] = c[-1]
            table = cls(cdf, np.array(lengths), np.array(offsets), precision)
            return table, pos
        except (AbsurdSizeError, MalformedError, TruncatedError) as err:
            raise err.with_name(name) from None


# ---------------------------------------------------------------------------------------------
# Coding
# ---------------------------------------------------------------------------------------------


@dataclass
class CodingReport:
    """Exact coded size against the ideal ``-sum(log2 p)`` under the model's own floats."""

    n_symbols: int
    ideal_bits: float
    actual_bits: int

    @property
    def overhead(self) -> float:
        """Relative excess of the real size over the ideal one."""
        return self.actual_bits / self.ideal_bits - 1 if self.ideal_bits > 0 else float("inf")


def _as_index(idx, R: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError("indexes must be integers")
    idx = idx.astype(np.int64, copy=False).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= R):
        raise ValueError(f"indexes must lie in 0..{R - 1}")
    return idx


def _row_groups(idx: np.ndarray, R: int):
    """Positions of each table row's elements, rows in increasing order, element order kept."""
    order = np.argsort(idx, kind="stable")
    ends = np.cumsum(np.bincount(idx, minlength=R))
    start = 0
    for r in range(R):
        end = int(ends[r])
        if end > start:
            yield r, order[start:end]
        start = end


def _bit_length(w: np.ndarray) -> np.ndarray:
    """Bit length of positive integers below 2**53 (frexp is exact; no log)."""
    return np.frexp(w.astype(np.float64))[1].astype(np.int64)


class Encoder:
    """Append symbols to one range-coded stream; :meth:`to_bytes` returns it.

    The decoder must make the same calls, in the same order, with the same models.
    """

    def __init__(self):
        self._enc = _queue.RangeEncoder()
        self._ideal = 0.0
        self._n = 0

    def encode_categorical(self, symbols, probs) -> None:
        """Code ``symbols[i]`` (0 <= s < K) under the distribution ``probs[i]`` (shape (n, K))."""
        p = np.asarray(probs)
        s = np.asarray(symbols)
        if s.dtype.kind not in "iu":
            raise TypeError("symbols must be integers")
        s = s.astype(np.int64).ravel()
        p = p.reshape(len(s), -1) if p.ndim != 2 else p
        if p.shape[0] != len(s):
            raise ValueError("need one probability row per symbol")
        if not len(s):
            return
        K = p.shape[1]
        if s.min() < 0 or s.max() >= K:
            raise ValueError(f"symbols must lie in 0..{K - 1}")
        fractions, totals = _coder_probabilities(p)
        self._enc.encode(s.astype(np.int32), _model.Categorical(perfect=False), fractions)
        chosen = p[np.arange(len(s)), s].astype(np.float64)
        with np.errstate(divide="ignore"):  # a symbol the model called impossible: infinite ideal cost
            self._ideal += float(-np.log2(chosen / totals).sum())
        self._n += len(s)

    def encode_factorized(self, values, table: CdfTable, indexes) -> None:
        """Code integer ``values`` under ``table``'s row ``indexes[i]`` each (same shape).

        Values outside a row's range are escaped and coded exactly; |v| < 2**40.
        """
        v = np.asarray(values)
        if v.dtype.kind not in "iu":
            raise TypeError("values must be integers")
        v = v.astype(np.int64).ravel()
        idx = _as_index(indexes, table.rows)
        if idx.shape != v.shape:
            raise ValueError("values and indexes must have the same number of elements")
        if not len(v):
            return
        if np.abs(v).max() >= 1 << MAX_VALUE_BITS:
            raise ValueError(f"values must satisfy |v| < 2**{MAX_VALUE_BITS}")
        s = v - table.offsets[idx]
        L = table.lengths[idx]
        esc = (s < 0) | (s >= L - 1)
        sym = np.where(esc, L - 1, s)
        top = float(1 << table.precision)
        for r, pos in _row_groups(idx, table.rows):
            self._enc.encode(sym[pos].astype(np.int32), table._coder_model(r))
            self._ideal += float(-np.log2(table.pmf(r)[sym[pos]] / top).sum())
        self._n += len(v)
        if esc.any():
            self._encode_escapes(s[esc], L[esc])

    def _encode_escapes(self, s: np.ndarray, L: np.ndarray) -> None:
        below = s < 0
        dist = np.where(below, -s - 1, s - (L - 1))
        w = 2 * dist + below + 1  # >= 1
        nb = _bit_length(w)
        self._enc.encode((nb - 1).astype(np.int32), _model.Uniform(_ESC_NBITS))
        self._ideal += len(w) * float(np.log2(_ESC_NBITS))
        rest = nb - 1  # bits below the leading one
        for j in range(0, _ESC_NBITS, _ESC_CHUNK):
            bits = np.clip(rest - j, 0, _ESC_CHUNK)
            sel = bits > 0
            if not sel.any():
                break
            part = (w[sel] >> j) & ((1 << bits[sel]) - 1)
            self._enc.encode(part.astype(np.int32), _model.Uniform(), (1 << bits[sel]).astype(np.int32))
            self._ideal += float(bits.sum())

    def to_bytes(self) -> bytes:
        words = self._enc.get_compressed()
        return words.astype("<u4").tobytes().rstrip(b"\0")

    def report(self) -> CodingReport:
        return CodingReport(self._n, self._ideal, 8 * len(self.to_bytes()))


class Decoder:
    """Decode a stream made by :class:`Encoder`, call for call."""

    def __init__(self, data: bytes, name: str | None = None):
        data = bytes(data)
        self.name = name
        data += b"\0" * (-len(data) % 4)
        self._dec = _queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))

    def _decode(self, *args) -> np.ndarray:
        try:
            return np.asarray(self._dec.decode(*args), dtype=np.int64)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as err:  # constriction's panics derive from BaseException
            raise PayloadError(f"corrupt entropy-coded payload ({err})", self.name) from None

    def decode_categorical(self, probs) -> np.ndarray:
        """Decode ``len(probs)`` symbols, row ``i`` of ``probs`` (n, K) being symbol ``i``'s distribution."""
        p = np.asarray(probs)
        if p.ndim != 2:
            raise ValueError("probabilities must have shape (n, K)")
        if not len(p):
            return np.zeros(0, dtype=np.int64)
        fractions, _ = _coder_probabilities(p)
        return self._decode(_model.Categorical(perfect=False), fractions)

    def decode_factorized(self, table: CdfTable, indexes) -> np.ndarray:
        """Decode values coded by :meth:`Encoder.encode_factorized`; the result has ``indexes``' shape."""
        shape = np.shape(indexes)
        idx = _as_index(indexes, table.rows)
        sym = np.empty(len(idx), dtype=np.int64)
        for r, pos in _row_groups(idx, table.rows):
            sym[pos] = self._decode(table._coder_model(r), len(pos))
        L = table.lengths[idx]
        s = sym.copy()
        esc = sym == L - 1
        if esc.any():
            s[esc] = self._decode_escapes(L[esc])
        return (s + table.offsets[idx]).reshape(shape)

    def _decode_escapes(self, L: np.ndarray) -> np.ndarray:
        n = len(L)
        rest = self._decode(_model.Uniform(_ESC_NBITS), n)
        w = np.ones(n, dtype=np.int64) << rest
        for j in range(0, _ESC_NBITS, _ESC_CHUNK):
            bits = np.clip(rest - j, 0, _ESC_CHUNK)
            sel = bits > 0
            if not sel.any():
                break
            part = self._decode(_model.Uniform(), (1 << bits[sel]).astype(np.int32))
            w[sel] |= part << j
        u = w - 1
        dist, below = u >> 1, (u & 1).astype(bool)
        return np.where(below, -dist - 1, dist + (L - 1))


def encode_categorical(symbols, probs) -> bytes:
    """One-call form: bytes of ``symbols`` coded under ``probs``."""
    enc = Encoder()
    enc.encode_categorical(symbols, probs)
    return enc.to_bytes()


def decode_categorical(data: bytes, probs, name: str | None = None) -> np.ndarray:
    return Decoder(data, name).decode_categorical(probs)


def encode_factorized(values, table: CdfTable, indexes) -> bytes:
    enc = Encoder()
    enc.encode_factorized(values, table, indexes)
    return enc.to_bytes()


def decode_factorized(data: bytes, table: CdfTable, indexes, name: str | None = None) -> np.ndarray:
    return Decoder(data, name).decode_factorized(table, indexes)
