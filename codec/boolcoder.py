"""The boolean entropy decoder of RFC 6386 section 7, as numba kernels over a small state array.

The decoder keeps a window of up to 56 not-yet-consumed bits in ``value``; the top 8 of them are the
byte the RFC's ``value`` compares against ``split``. Decoding a bool consumes ``shift`` bits (the
renormalisation of section 7.3) by lowering ``bits``, so ``value`` itself never shifts left.

State array layout (int64)::

    st[VALUE]  bits not yet consumed, right-aligned  (value < range << (bits - 8))
    st[BITS]   how many valid bits value holds
    st[RANGE]  128..255 between calls
    st[POS]    next byte of ``data`` to load
    st[END]    one past the last byte of this partition
    st[FAKE]   zero bytes loaded past END (reading past the end reads zeros, as libvpx does)

Corruption is a sticky condition, checked once per frame (or macroblock row) by ``bd_overrun``:
libvpx calls a partition corrupt when the byte under comparison reaches past its end, that is
when fewer than 8 real bits remain in the window.
"""

import numpy as np
from numba import njit

VALUE, BITS, RANGE, POS, END, FAKE = 0, 1, 2, 3, 4, 5
STATE_SIZE = 6

# Renormalisation shift for each range value: how far to shift left to bring it back to >= 128.
NORM_SHIFT = np.array([0] + [7 - int(np.log2(r)) for r in range(1, 256)], dtype=np.int64)
NORM_SHIFT.setflags(write=False)


@njit(cache=True, _nrt=False)
def bd_init(st, data, start, end):
    """Start decoding ``data[start:end]`` (section 7.3, init_bool_decoder)."""
    st[VALUE] = 0
    st[BITS] = 0
    st[RANGE] = 255
    st[POS] = start
    st[END] = end
    st[FAKE] = 0
    _fill(st, data)


@njit(inline="always")
def _refill(data, value, bits, pos, end, fake):
    """Load bytes until the window holds more than 48 bits; zeros past ``end`` (counted in fake)."""
    while bits <= 48:
        if pos < end:
            value = (value << 8) | data[pos]
            pos += 1
        else:
            value = value << 8
            fake += 1
        bits += 8
    return value, bits, pos, fake


@njit(cache=True, _nrt=False)
def _fill(st, data):
    st[VALUE], st[BITS], st[POS], st[FAKE] = _refill(data, st[VALUE], st[BITS], st[POS], st[END], st[FAKE])


@njit(inline="always")
def bd_step(data, prob, value, bits, rng, pos, end, fake):
    """Decode one bool from state held in locals; returns (bit, value, bits, rng, pos, fake).

    The hot token loop keeps the decoder in registers this way; ``bd_read`` wraps it for callers
    that keep the state in an array. Section 7.3: split the range in proportion to ``prob``,
    compare the top byte, then renormalise.
    """
    if bits < 16:
        value, bits, pos, fake = _refill(data, value, bits, pos, end, fake)
    split = 1 + (((rng - 1) * prob) >> 8)
    bigsplit = split << (bits - 8)
    if value >= bigsplit:
        rng -= split
        value -= bigsplit
        bit = 1
    else:
        rng = split
        bit = 0
    shift = NORM_SHIFT[rng]
    bits -= shift
    # libvpx's window is a 64-bit register that the renormalisation shifts left, dropping the
    # bits it shifts out. Valid data never has any there; data that does (a partition starting
    # with 0xff) must lose them as libvpx does.
    value &= (1 << bits) - 1
    return bit, value, bits, rng << shift, pos, fake


@njit(cache=True, _nrt=False)
def bd_read(st, data, prob):
    """Decode one bool whose probability of being 0 is ``prob / 256`` (section 7.3)."""
    bit, value, bits, rng, pos, fake = bd_step(data, prob, st[VALUE], st[BITS], st[RANGE], st[POS],
                                               st[END], st[FAKE])
    st[VALUE] = value
    st[BITS] = bits
    st[RANGE] = rng
    st[POS] = pos
    st[FAKE] = fake
    return bit


@njit(cache=True, _nrt=False)
def bd_literal(st, data, n):
    """An n-bit unsigned literal, most significant bit first, each at probability 128."""
    v = 0
    for _ in range(n):
        v = (v << 1) | bd_read(st, data, 128)
    return v


@njit(cache=True, _nrt=False)
def bd_tree(st, data, tree, probs):
    """Walk a tree in the RFC's tree_index form (section 8.1); return the leaf value."""
    i = 0
    while True:
        i = tree[i + bd_read(st, data, probs[i >> 1])]
        if i <= 0:
            return -i


@njit(cache=True, _nrt=False)
def bd_overrun(st):
    """True when decoding has used bits beyond the partition's end (libvpx's vp8dx_bool_error)."""
    return st[BITS] - 8 * st[FAKE] < 8


class BoolDecoder:
    """Python face of the kernels, for the frame header (section 9); kernels take ``st`` directly."""

    def __init__(self, data: np.ndarray, start: int, end: int):
        self.data = data
        self.st = np.zeros(STATE_SIZE, np.int64)
        bd_init(self.st, data, start, end)

    def read(self, prob: int) -> int:
        return bd_read(self.st, self.data, prob)

    def flag(self) -> bool:
        return bool(bd_read(self.st, self.data, 128))

    def literal(self, n: int) -> int:
        return bd_literal(self.st, self.data, n)

    def signed(self, n: int) -> int:
        """An n-bit magnitude followed by a sign flag (the RFC's L(n) then sign)."""
        v = bd_literal(self.st, self.data, n)
        return -v if self.flag() else v

    def optional_signed(self, n: int) -> int:
        """A flag; if set, a signed n-bit value, else 0 (quantizer and filter deltas)."""
        return self.signed(n) if self.flag() else 0

    def overrun(self) -> bool:
        return bool(bd_overrun(self.st))
