"""ExCamera[N, x] in one process (``excamera encode --workers 0``): the whole algorithm, in the
order the distributed runtime runs it, so that spreading the same steps over workers gives the
same bytes.

1. First pass (parallel): each chunk of N raw frames is encoded on its own, a key frame then
   interframes (libvpx through PyAV, or the native encoder), and terminated: its last frame
   refreshes every reference, so its exit state holds one picture.
2. Encode-given-state (parallel): each chunk but the first of its batch encodes its first raw
   frame as an interframe against the previous chunk's first-pass exit state.
3. Rebase (serial along each batch of x chunks): each such chunk's frames are coded again onto the
   state the previous chunk really left.
Each batch begins with a key frame: one key frame every N * x frames.

``encode_frames`` runs the three steps here, in order, one batch at a time (a batch's pictures are
all it holds). The distributed runtime
(``excamera encode --workers N``, ``coordinator.excamera_job``) runs the same steps on workers, one
chunk each, through ``given_state_frame`` (step 2) and ``rebase_chunk`` (step 3): together they
are ``codec.reencode.reencode_chunk`` cut where ExCamera cuts it, between the parallel
encode-given-state and the serial rebase, so both paths produce the same bytes (the tests check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the codec (numba and its kernels) loads where a function needs it, not in
    # the coordinator's process, which only needs EncodeSettings and chunk_ranges
    from codec.image import Image
    from codec.state import DecoderState


@dataclass(frozen=True)
class EncodeSettings:
    chunk_frames: int = 6       # N
    batch_chunks: int = 16      # x
    cq_level: int = 20          # 0..63, libvpx's constant-quality scale
    first_pass: str = "libvpx"  # or "native"
    speed: int = 1              # native encoder speed (encode-given-state, native first pass)
    kf_q_weight: float = 0.75

    def __post_init__(self):
        if self.chunk_frames < 1:
            raise ValueError(f"--chunk-frames {self.chunk_frames} is below 1")
        if self.batch_chunks < 1:
            raise ValueError(f"--batch-chunks {self.batch_chunks} is below 1")
        if not 0 <= self.cq_level <= 63:
            raise ValueError(f"--cq-level {self.cq_level} is outside 0..63")
        if self.first_pass not in ("libvpx", "native"):
            raise ValueError(f"--first-pass {self.first_pass!r} is neither libvpx nor native")


def native_quantizer(cq_level: int) -> int:
    """The native encoder's quantizer index for a libvpx cq-level: equal up to 16, then rising
    linearly to 127 at 63 (libvpx's own scale is steeper at the top)."""
    return cq_level if cq_level <= 16 else min(127, round(16 + (cq_level - 16) * 111 / 47))


def chunk_ranges(n_frames: int, settings: EncodeSettings) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the chunks; the last may be shorter."""
    n = settings.chunk_frames
    return [(s, min(s + n, n_frames)) for s in range(0, n_frames, n)]


@dataclass(frozen=True)
class FirstPass:
    """One chunk's first pass, terminated, with the decoder states it passes through: decoded
    once, where it is made, and handed to the later steps (state dump, encode-given-state, rebase)
    so that none of them decodes it again."""

    frames: list[bytes]         # the compressed frames, from the empty state, the last terminated
    states: list[DecoderState]  # the state before each frame (states[0] is the empty state)
    exit: DecoderState          # the state after the last frame (what the state dump sends)

    @staticmethod
    def decode(frames: list[bytes]) -> FirstPass:
        """The states of an already terminated first pass (one read back from storage)."""
        from codec.decoder import decode_frame
        from codec.state import DecoderState
        states, state = [], DecoderState()
        for d in frames:
            states.append(state)
            state, _ = decode_frame(state, d)
        return FirstPass(list(frames), states, state)


def first_pass_chunk(frames: list[Image], settings: EncodeSettings, fps: tuple[int, int]) -> FirstPass:
    """Step 1 for one chunk: its frames coded from the empty state, then terminated (decoding them
    once, which also checks that they decode)."""
    from codec.chunks import terminate_chunk
    from codec.state import DecoderState
    if settings.first_pass == "native":
        from codec.encoder import Encoder, EncoderConfig
        enc = Encoder(EncoderConfig(quantizer=native_quantizer(settings.cq_level), speed=settings.speed,
                                    keyframe_interval=1 << 30))
        data = [enc.encode(f).data for f in frames]
        where = None
    else:
        from media.firstpass import libvpx_first_pass
        data = libvpx_first_pass(frames, fps, settings.cq_level)
        where = "libvpx's frame {}".format
    states: list[DecoderState] = []
    data, state = terminate_chunk(DecoderState(), data, where=where, states=states)
    return FirstPass(data, states, state)


def first_pass(frames: list[Image], settings: EncodeSettings, fps: tuple[int, int]) -> list[bytes]:
    """Step 1 for one chunk: its frames coded from the empty state, then terminated."""
    return first_pass_chunk(frames, settings, fps).frames


def exit_state(data: list[bytes], state: DecoderState | None = None) -> DecoderState:
    """The decoder state after a chunk (the state dump of ExCamera)."""
    from codec.decoder import decode_frame
    from codec.state import DecoderState
    state = state if state is not None else DecoderState()
    for d in data:
        state, _ = decode_frame(state, d)
    return state


def encode_frames(frames: Iterable[Image], settings: EncodeSettings, fps: tuple[int, int] = (30, 1),
                  progress: Callable[[str, int, int | None], None] | None = None,
                  total_frames: int | None = None) -> list[bytes]:
    """ExCamera[N, x] over ``frames``: the compressed frames of the whole stream, in order.

    ``frames`` may be any iterable (a ``VideoReader`` included): batches are independent (each
    begins with a key frame), so pictures are taken one batch of N * x at a time and only that
    batch is held. ``progress(stage, chunks done, chunks in all)`` follows each chunk; the total is
    known for a list, else from ``total_frames`` (a hint), else None."""
    from codec.state import DecoderState
    n = settings.chunk_frames
    per_batch = n * settings.batch_chunks
    if total_frames is None and isinstance(frames, (list, tuple)):
        total_frames = len(frames)
    total = -(-total_frames // n) if total_frames else None
    tick = progress or (lambda stage, done, total: None)
    out: list[bytes] = []
    state = DecoderState()
    batch: list[Image] = []
    seen = done = 0
    for image in frames:
        batch.append(image)
        seen += 1
        if len(batch) == per_batch:
            state = _encode_batch(batch, settings, fps, state, out, tick, done, total)
            done += settings.batch_chunks
            batch = []
    if seen < n:
        raise ValueError(f"the input has {seen} frames, fewer than one chunk of {n}")
    if batch:
        _encode_batch(batch, settings, fps, state, out, tick, done, total)
    return out


def _encode_batch(frames: list[Image], settings: EncodeSettings, fps: tuple[int, int], state: DecoderState,
                  out: list[bytes], tick, done: int, total: int | None) -> DecoderState:
    """One batch: its first passes, then its rebase chain from its key frame, appended to ``out``;
    returns the decoder state after it. ``done``: chunks before this batch."""
    ranges = chunk_ranges(len(frames), settings)
    passes = []
    for i, (a, b) in enumerate(ranges):
        passes.append(first_pass_chunk(frames[a:b], settings, fps))
        tick("first pass", done + i + 1, total)
    for i, (a, b) in enumerate(ranges):
        if i == 0:
            chunk = passes[0].frames  # begins the batch with its key frame
            state = passes[0].exit
        else:
            given = passes[i - 1].exit
            first = given_state_frame(given, frames[a], passes[i].frames, settings, passes[i].states)
            chunk, state = rebase_chunk(state, given, first, frames[a:b], passes[i].frames, passes[i].states)
        out.extend(chunk)
        tick("rebase", done + i + 1, total)
    return state


def prediction_states(prediction: list[bytes]) -> tuple[list[DecoderState], list[bool]]:
    """The decoder state before each frame of a first pass (coded from the empty state) and
    whether each frame is shown (False for a hidden frame)."""
    from codec.chunks import frame_tag
    return FirstPass.decode(prediction).states, [frame_tag(d).show_frame for d in prediction]


def chunk_quantizer(prediction: list[bytes], kf_q_weight: float, states: list[DecoderState] | None = None) -> int:
    """The quantizer of the frame that replaces a first pass's key frame: blended between the key
    frame's and the next frame's (``codec.reencode.blended_quantizer``), as ``reencode_chunk``.
    ``states``: the prediction's states (``FirstPass.states``), if known (else it is decoded)."""
    from codec.reencode import blended_quantizer, frame_quantizer
    if states is None:
        states, _ = prediction_states(prediction[:2])
    first_q = frame_quantizer(states[0], prediction[0])
    next_q = frame_quantizer(states[1], prediction[1]) if len(prediction) > 1 else first_q
    return blended_quantizer(first_q, next_q, kf_q_weight)


def given_state_frame(given: DecoderState, raw_first: Image, prediction: list[bytes],
                      settings: EncodeSettings, states: list[DecoderState] | None = None) -> bytes:
    """Step 2 for one chunk: its first raw image coded as an interframe against ``given`` (the
    previous chunk's first-pass exit state), at the quantizer ``reencode_chunk`` picks.
    ``states``: the prediction's states (``FirstPass.states``), if known."""
    from codec.reencode import encode_given_state, filter_hint
    if not prediction:
        raise ValueError("the prediction chunk has no frames")
    if states is None:
        states, _ = prediction_states(prediction[:2])
    q = chunk_quantizer(prediction, settings.kf_q_weight, states)
    hint = filter_hint(states[0], prediction[0])
    return encode_given_state(given, raw_first, q, settings.speed, hint).data


def rebase_chunk(state_in: DecoderState, given: DecoderState, given_frame: bytes, raw: list[Image],
                 prediction: list[bytes], states: list[DecoderState] | None = None
                 ) -> tuple[list[bytes], DecoderState]:
    """Step 3 for one chunk: ``given_frame`` (step 2's, coded against ``given``) and the first
    pass's later frames coded again onto ``state_in``, the state the previous chunk really left.
    Returns the chunk's frames and the state after them. The same bytes as ``reencode_chunk(
    state_in, raw, prediction, given_state=given)``, whose second half this is. ``states``: the
    prediction's states (``FirstPass.states``), if known (else the prediction is decoded)."""
    from codec.chunks import frame_tag
    from codec.decoder import decode_frame
    from codec.reencode import _hidden_target, rebase_frame
    if states is None:
        states, _ = prediction_states(prediction)
    if len(states) != len(prediction):
        raise ValueError(f"{len(states)} prediction states for {len(prediction)} frames")
    shown = [frame_tag(d).show_frame for d in prediction]
    n_shown = sum(shown)
    if n_shown != len(raw):
        raise ValueError(f"the prediction shows {n_shown} frames but the raw chunk has {len(raw)}")
    if not shown[0]:
        raise ValueError("the prediction's first frame is hidden; it must show the chunk's first image")
    if given.digest() != state_in.digest():
        rebased = rebase_frame(state_in, given, given_frame, raw[0])
        first, state = rebased.data, rebased.state
    else:
        first = given_frame
        state, _ = decode_frame(state_in, first)
    out = [first]
    shown_index = 1
    for i in range(1, len(prediction)):
        if shown[i]:
            target = raw[shown_index]
            shown_index += 1
        else:  # a hidden frame (an alt-ref): toward the picture the first pass made for it
            target = Image(*_hidden_target(states, prediction, i))
        frame = rebase_frame(state, states[i], prediction[i], target)
        out.append(frame.data)
        state = frame.state
    return out, state
