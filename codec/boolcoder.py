"""The boolean entropy decoder and encoder of RFC 6386 section 7, as numba kernels over small state
arrays (decoder ``bd_*`` here, encoder ``be_*`` in the second half of the module, each with a Python
class for the frame header: ``BoolDecoder`` / ``BoolEncoder``).

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

from .jit import njit

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


# ---------------------------------------------------------------------------------------------
# The boolean entropy encoder (section 7.3), the decoder's mirror image.
#
# The encoder keeps the low end of the coding interval in ``low``: its bottom 8 bits line up with
# ``range``, the bits above them are output not yet written. A byte is due every 8 renormalising
# shifts, after an initial 24 (the RFC's ``bit_count``); ``count`` counts the shifts towards it,
# from -24. The byte written is bits 24..31 of ``low``; bit 32, if an addition carried into it,
# is a carry into the bytes already written (the RFC's ``add_one_to_output``).
#
# Encoder state array layout (int64)::
#
#     es[E_LOW]    pending low end of the interval (< 2**33 between calls)
#     es[E_RANGE]  128..255 between calls
#     es[E_COUNT]  shifts towards the next output byte, -24..-1 between calls
#     es[E_POS]    bytes written to the output buffer
#
# The output buffer is a uint8 array the kernels grow (doubling) when full; every kernel that may
# write returns the buffer, which the caller must use from then on. ``be_flush`` ends a partition
# as libvpx does, with 32 zero bools at probability 128, so the written bytes (and the partition
# sizes) of a libvpx-made stream are reproduced exactly; the RFC's ``flush_bool_encoder`` pads
# differently (a decoder reads either the same).

E_LOW, E_RANGE, E_COUNT, E_POS = 0, 1, 2, 3
ENC_STATE_SIZE = 4


@njit(cache=True)
def be_init(es):
    """Start a new partition (the RFC's init_bool_encoder)."""
    es[E_LOW] = 0
    es[E_RANGE] = 255
    es[E_COUNT] = -24
    es[E_POS] = 0


@njit(cache=True)
def be_grow(buf, need):
    """``buf`` if it has room for ``need`` bytes, else a copy at least twice as large."""
    if need <= buf.shape[0]:
        return buf
    n = max(need, 2 * buf.shape[0], 64)
    out = np.zeros(n, np.uint8)
    out[:buf.shape[0]] = buf
    return out


@njit(inline="always")
def be_put(buf, prob, bit, low, rng, count, pos):
    """Encode one bool from state held in locals into ``buf``, which must have room for a byte at
    ``pos``; returns (low, rng, count, pos).

    Section 7.3: split the range in proportion to ``prob``, keep the lower (0) or upper (1) part,
    then shift range and low left until range is back in 128..255, writing a byte every 8 shifts.
    """
    split = 1 + (((rng - 1) * prob) >> 8)
    if bit:
        low += split
        rng -= split
    else:
        rng = split
    shift = NORM_SHIFT[rng]
    rng <<= shift
    count += shift
    if count >= 0:
        # A byte boundary falls inside this shift: move the finished byte to bits 24..31 first.
        low <<= shift - count
        if low >> 32:
            # Carry into the bytes already written: 0xff bytes roll over to 0 and pass it on.
            q = pos - 1
            while q >= 0 and buf[q] == 255:
                buf[q] = 0
                q -= 1
            if q >= 0:
                buf[q] += 1
        buf[pos] = (low >> 24) & 255
        pos += 1
        low = (low & 0xFFFFFF) << count
        count -= 8
    else:
        low <<= shift
    return low, rng, count, pos


@njit(inline="always")
def be_step(buf, prob, bit, low, rng, count, pos):
    """``be_put`` into a buffer grown as needed; returns (buf, low, rng, count, pos)."""
    if pos >= buf.shape[0]:
        buf = be_grow(buf, pos + 1)
    low, rng, count, pos = be_put(buf, prob, bit, low, rng, count, pos)
    return buf, low, rng, count, pos


@njit(cache=True)
def be_write(es, buf, bit, prob):
    """Encode ``bit`` whose probability of being 0 is ``prob / 256``; returns the buffer."""
    buf, es[E_LOW], es[E_RANGE], es[E_COUNT], es[E_POS] = be_step(buf, prob, bit, es[E_LOW], es[E_RANGE],
                                                                  es[E_COUNT], es[E_POS])
    return buf


@njit(cache=True)
def be_literal(es, buf, n, value):
    """An n-bit unsigned literal, most significant bit first, each at probability 128."""
    for i in range(n - 1, -1, -1):
        buf = be_write(es, buf, (value >> i) & 1, 128)
    return buf


@njit(cache=True)
def be_tree(es, buf, tree, probs, value):
    """Write leaf ``value`` of a tree in tree_index form (section 8.1): find the leaf's slot, climb
    to the root collecting the branch taken at each node, then write them root first. A value that
    is not a leaf of the tree writes nothing and returns an empty buffer.

    The path is kept in one integer, 5 bits a slot (every tree of the format has under 32 slots and
    is under 12 deep), not in an array: this runs for every mode of every macroblock, and an array
    would be a heap allocation each time."""
    path = 0  # slot indices, leaf in the lowest 5 bits
    n = 0
    slot = -1
    for i in range(tree.shape[0]):
        if tree[i] <= 0 and -tree[i] == value:
            slot = i
            break
    if slot < 0:
        return buf[:0]
    while True:
        path |= slot << (5 * n)
        n += 1
        node = slot & ~1
        if node == 0:
            break
        slot = -1
        for i in range(tree.shape[0]):
            if tree[i] == node:
                slot = i
                break
    for j in range(n - 1, -1, -1):
        s = (path >> (5 * j)) & 31
        buf = be_write(es, buf, s & 1, probs[s >> 1])
    return buf


@njit(cache=True)
def be_flush(es, buf):
    """End the partition as libvpx does: 32 zero bools at probability 128 push out every pending
    bit (and the padding a decoder's look-ahead reads). Returns the buffer; its bytes are
    ``buf[:es[E_POS]]``."""
    for _ in range(32):
        buf = be_write(es, buf, 0, 128)
    return buf


class BoolEncoder:
    """Python face of the encoder kernels, for the frame header; mirrors ``BoolDecoder``.

    ``write(bit, prob)``, ``flag(b)``, ``literal(n, v)``, ``signed(n, v)``,
    ``optional_signed(n, v)``, ``tree(tree, probs, v)``; ``finish()`` flushes and returns the bytes.
    Kernels can continue a partition from ``es`` / ``buf`` (then store the returned buffer back).
    """

    def __init__(self, capacity: int = 1024):
        self.es = np.zeros(ENC_STATE_SIZE, np.int64)
        self.buf = np.zeros(max(capacity, 16), np.uint8)
        be_init(self.es)

    def write(self, bit: int, prob: int) -> None:
        self.buf = be_write(self.es, self.buf, int(bit), int(prob))

    def flag(self, b) -> None:
        self.buf = be_write(self.es, self.buf, int(bool(b)), 128)

    def literal(self, n: int, value: int) -> None:
        value = int(value)
        if not 0 <= value < (1 << n):
            raise ValueError(f"{value} does not fit in an unsigned {n}-bit literal")
        self.buf = be_literal(self.es, self.buf, n, value)

    def signed(self, n: int, value: int) -> None:
        """An n-bit magnitude followed by a sign flag (the RFC's L(n) then sign)."""
        value = int(value)
        self.literal(n, abs(value))
        self.flag(value < 0)

    def optional_signed(self, n: int, value: int, coded: bool | None = None) -> None:
        """A flag, then if set a signed n-bit value. ``coded`` None codes the value iff nonzero
        (what libvpx does); True also codes a zero."""
        if coded is None:
            coded = value != 0
        elif not coded and value:
            raise ValueError(f"nonzero value {value} marked as not coded")
        self.flag(coded)
        if coded:
            self.signed(n, value)

    def tree(self, tree: np.ndarray, probs, value: int) -> None:
        probs = np.asarray(probs, np.uint8)
        out = be_tree(self.es, self.buf, tree, probs, int(value))
        if out.shape[0] == 0:
            raise ValueError(f"{value} is not a leaf of the tree")
        self.buf = out

    def finish(self) -> bytes:
        """Flush (libvpx's way) and return the partition's bytes; the encoder is then spent."""
        self.buf = be_flush(self.es, self.buf)
        return self.buf[:self.es[E_POS]].tobytes()
