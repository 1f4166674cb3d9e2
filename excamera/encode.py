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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from codec.decoder import decode_frame
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


def first_pass(frames: list[Image], settings: EncodeSettings, fps: tuple[int, int]) -> list[bytes]:
    """Step 1 for one chunk: its frames coded from the empty state, then terminated."""
    from codec.chunks import terminate_chunk
    if settings.first_pass == "native":
        from codec.encoder import Encoder, EncoderConfig
        enc = Encoder(EncoderConfig(quantizer=native_quantizer(settings.cq_level), speed=settings.speed,
                                    keyframe_interval=1 << 30))
        data = [enc.encode(f).data for f in frames]
    else:
        from excamera.firstpass import libvpx_first_pass
        data = libvpx_first_pass(frames, fps, settings.cq_level)
    data, _ = terminate_chunk(DecoderState(), data)
    return data


def exit_state(data: list[bytes], state: DecoderState | None = None) -> DecoderState:
    """The decoder state after a chunk (the state dump of ExCamera)."""
    state = state if state is not None else DecoderState()
    for d in data:
        state, _ = decode_frame(state, d)
    return state


def encode_frames(frames: list[Image], settings: EncodeSettings, fps: tuple[int, int] = (30, 1),
                  progress: Callable[[str, int, int], None] | None = None) -> list[bytes]:
    """ExCamera[N, x] over ``frames``: the compressed frames of the whole stream, in order."""
    from codec.reencode import reencode_chunk
    if len(frames) < settings.chunk_frames:
        raise ValueError(f"the input has {len(frames)} frames, fewer than one chunk of {settings.chunk_frames}")
    ranges = chunk_ranges(len(frames), settings)
    tick = progress or (lambda stage, done, total: None)
    passes = []
    for i, (a, b) in enumerate(ranges):
        passes.append(first_pass(frames[a:b], settings, fps))
        tick("first pass", i + 1, len(ranges))
    fp_exit = [exit_state(p) for p in passes]
    out: list[bytes] = []
    state = DecoderState()
    for i, (a, b) in enumerate(ranges):
        if i % settings.batch_chunks == 0:
            chunk = passes[i]  # begins the batch with its key frame
        else:
            chunk = [f.data for f in reencode_chunk(state, frames[a:b], passes[i], kf_q_weight=settings.kf_q_weight,
                                                    speed=settings.speed, given_state=fp_exit[i - 1])]
        for d in chunk:
            state, _ = decode_frame(state, d)
        out.extend(chunk)
        tick("rebase", i + 1, len(ranges))
    return out
