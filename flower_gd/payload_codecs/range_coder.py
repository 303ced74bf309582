"""Adaptive arithmetic coding of small-alphabet symbols in contexts: the coder of the
hard4p2r1-ac codec (`hard4p2r1_ac.py`).

zlib's deflate, which the other codecs end with, codes each byte by its own frequency: a
hard4p1 symbol byte (4-bit label, 4-bit weight level) comes out near the byte's order-0
entropy, and a field packed in another part cannot use what the first one says (a sample's
top-probability level depends on its weight level, its runner-up on its label). An
arithmetic coder with adaptive counts per context codes each field given the fields before
it, with no table in the header: the counts start flat and learn as the payload goes, the
same on both sides.

This is the classic integer coder of Witten, Neal and Cleary (CACM 1987): 32-bit low and
high, bits of the interval emitted as soon as they are settled, underflow counted as
pending bits. Each `Model` holds one count per symbol per context (start 1, add `STEP` per
use, halve all when a context's total passes `LIMIT`). Pure Python: about a tenth of a
second for 6000 samples of four fields each way (`make bench-replay` screens codec ideas
with it, `strategies/gossip_replay.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

BITS = 32
TOP = (1 << BITS) - 1
HALF = 1 << (BITS - 1)
QUARTER = 1 << (BITS - 2)
STEP = 24
LIMIT = 1 << 16  # a context's total stays far below QUARTER, so no interval collapses


class Model:
    """Adaptive symbol counts for `contexts` contexts over an alphabet of `size`."""

    def __init__(self, size: int, contexts: int = 1) -> None:
        if size < 1 or contexts < 1:
            raise ValueError(f"a model needs at least one symbol and one context, not "
                             f"{size} and {contexts}")
        self.size = size
        self.counts = [[1] * size for _ in range(contexts)]
        self.totals = [size] * contexts

    def interval(self, context: int, symbol: int) -> tuple[int, int, int]:
        """(cumulative count below `symbol`, that plus its count, the context's total)."""
        counts = self.counts[context]
        if not 0 <= symbol < self.size:
            raise ValueError(f"symbol {symbol} outside the alphabet 0..{self.size - 1}")
        low = sum(counts[:symbol])
        return low, low + counts[symbol], self.totals[context]

    def find(self, context: int, target: int) -> tuple[int, int, int]:
        """The symbol whose interval holds cumulative count `target`, and its interval."""
        counts, low = self.counts[context], 0
        for symbol, count in enumerate(counts):
            if target < low + count:
                return symbol, low, low + count
            low += count
        raise ValueError("corrupt stream: the target lies past the context's total")

    def update(self, context: int, symbol: int) -> None:
        counts = self.counts[context]
        counts[symbol] += STEP
        self.totals[context] += STEP
        if self.totals[context] > LIMIT:
            self.counts[context] = [(c + 1) // 2 for c in counts]
            self.totals[context] = sum(self.counts[context])


class Encoder:
    def __init__(self) -> None:
        self.low, self.high, self.pending = 0, TOP, 0
        self.bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)
        self.pending = 0

    def encode(self, model: Model, context: int, symbol: int) -> None:
        lo, hi, total = model.interval(context, symbol)
        span = self.high - self.low + 1
        self.high = self.low + span * hi // total - 1
        self.low = self.low + span * lo // total
        while True:
            if self.high < HALF:
                self._emit(0)
            elif self.low >= HALF:
                self._emit(1)
                self.low -= HALF
                self.high -= HALF
            elif self.low >= QUARTER and self.high < HALF + QUARTER:
                self.pending += 1
                self.low -= QUARTER
                self.high -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
        model.update(context, symbol)

    def finish(self) -> bytes:
        """Two more bits pin the final interval; the stream is padded with zeros to a byte."""
        self.pending += 1
        self._emit(0 if self.low < QUARTER else 1)
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


class Decoder:
    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0
        self.low, self.high, self.value = 0, TOP, 0
        for _ in range(BITS):
            self.value = 2 * self.value + self._bit()

    def _bit(self) -> int:
        byte, bit = divmod(self.position, 8)
        self.position += 1
        if byte >= len(self.data):
            return 0  # past the end: the padding the encoder would have written
        return (self.data[byte] >> (7 - bit)) & 1

    def decode(self, model: Model, context: int) -> int:
        total = model.totals[context]
        span = self.high - self.low + 1
        target = ((self.value - self.low + 1) * total - 1) // span
        symbol, lo, hi = model.find(context, target)
        self.high = self.low + span * hi // total - 1
        self.low = self.low + span * lo // total
        while True:
            if self.high < HALF:
                pass
            elif self.low >= HALF:
                self.low -= HALF
                self.high -= HALF
                self.value -= HALF
            elif self.low >= QUARTER and self.high < HALF + QUARTER:
                self.low -= QUARTER
                self.high -= QUARTER
                self.value -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
            self.value = 2 * self.value + self._bit()
        model.update(context, symbol)
        return symbol


Context = tuple[int, ...]


def _models(sizes: Sequence[int], contexts: Sequence[Context]) -> list[Model]:
    for k, ctx in enumerate(contexts):
        if any(not 0 <= j < k for j in ctx):
            raise ValueError(f"field {k}'s context {ctx} names a field not coded before it")
    return [Model(size, math.prod(sizes[j] for j in ctx))
            for size, ctx in zip(sizes, contexts, strict=True)]


def _context(row: Sequence[int], ctx: Context, sizes: Sequence[int]) -> int:
    index = 0
    for j in ctx:  # mixed radix; an absent field (-1) reads as its alphabet's last symbol
        index = index * sizes[j] + (row[j] % sizes[j])
    return index


def encode_fields(rows: Iterable[Sequence[int]], sizes: Sequence[int],
                  contexts: Sequence[Context]) -> bytes:
    """Code each row's fields in order; field k's context is the values of the earlier
    fields `contexts[k]` of the same row (empty: one context). A field of -1 is absent from
    that row (not coded)."""
    models = _models(sizes, contexts)
    encoder = Encoder()
    for row in rows:
        if len(row) != len(sizes):
            raise ValueError(f"a row of {len(row)} fields, not {len(sizes)}: {list(row)[:8]}")
        for k, symbol in enumerate(row):
            if symbol == -1:
                continue
            encoder.encode(models[k], _context(row, contexts[k], sizes), symbol)
    return encoder.finish()


def decode_fields(data: bytes, count: int, sizes: Sequence[int],
                  contexts: Sequence[Context],
                  present: Sequence[Callable[[list[int]], bool] | None] | None = None
                  ) -> list[list[int]]:
    """`encode_fields`' inverse for `count` rows; `present[k]`, given the row's fields
    before k, says whether field k was coded (None: always); an absent field reads -1."""
    models = _models(sizes, contexts)
    decoder = Decoder(data)
    rows = []
    for _ in range(count):
        row: list[int] = []
        for k, ctx in enumerate(contexts):
            test = present[k] if present is not None else None
            if test is not None and not test(row):
                row.append(-1)
                continue
            row.append(decoder.decode(models[k], _context(row, ctx, sizes)))
        rows.append(row)
    return rows
