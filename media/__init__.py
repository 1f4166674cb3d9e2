"""Video in and out, beside the codec: PyAV-backed readers and muxers, and the ExCamera algorithm
built from the codec's steps.

- ``media.video``: open any input (IVF, Y4M, or anything FFmpeg reads) as I420 pictures;
- ``media.webm``: VP8 frames into WebM without re-encoding;
- ``media.firstpass`` and ``media.vpxheap``: ExCamera's first pass, a chunk encoded by libvpx;
- ``media.excamera_encode``: ExCamera[N, x] as functions over pictures, the steps workers run.

Imports ``codec`` and nothing above it.
"""
