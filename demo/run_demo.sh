#!/usr/bin/env bash
# 1. Decode the demo stream (real foreman CIF footage, with hidden alt-ref frames) with excamera and
#    check every frame against libvpx's MD5s (made with vpxdec; see tests/data/SOURCES.md).
# 2. Encode the same 60 pictures with `excamera encode` (ExCamera[6,16], every step in this
#    process) and check the result: one picture per input frame, a key frame exactly every N*x
#    frames, vpxdec's pictures equal to ours (when vpxdec is installed), a sane SSIM.
# 3. Run two pipelines (Sprocket pipespecs from pipelines/) on bundled real clips: the mirror
#    effect on the bikes clip, and "find the scenes this person appears in" on bundled footage.
#    The WebM files they write, and the ExCamera encode as WebM, are left in out/demo/ to open
#    in any browser, with a chart of the mirror pipeline's tasks on its workers (PNG).
# 4. Sound: a clip with a soundtrack encoded (WebM, Opus) and run through a pipeline (MP4, HLS,
#    DASH), then out/demo/index.html, a page that plays every result with its sound.
set -euo pipefail
cd "$(dirname "$0")/.."
stream=demo/foreman_cif_60f.ivf
expected=demo/foreman_cif_60f.ivf.md5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

# -- 1. decode ------------------------------------------------------------------------------------
got="$work/decode.md5"
start=$(now)
excamera decode "$stream" --frame-md5 > "$got"
secs=$(since "$start")

n=$(wc -l < "$expected")
size=$(head -1 "$got" | sed -E 's/.*-([0-9]+x[0-9]+)-[0-9]+\.i420$/\1/')
ivf_frames=$(python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(); i=32; n=0
while i < len(d): i += 12 + struct.unpack_from('<I', d, i)[0]; n += 1
print(n)" "$stream")
echo "$stream: $ivf_frames IVF frames, $(wc -l < "$got") shown, $size, decoded in ${secs}s"
if diff <(sort -k2 "$expected") <(sort -k2 "$got") > /dev/null; then
    echo "all $n frames match libvpx"
else
    echo "MISMATCH against libvpx:" >&2
    diff <(sort -k2 "$expected") <(sort -k2 "$got") | head -20 >&2
    exit 1
fi

# -- 2. encode (ExCamera[N, x] with the defaults: N = 6, x = 16, cq-level 20, --workers 0) ---------
N=6
X=16
out="$work/foreman_excamera.ivf"
start=$(now)
excamera encode "$stream" -o "$out" --workers 0 2> "$work/encode.log" || { cat "$work/encode.log" >&2; exit 1; }
secs=$(since "$start")
bytes=$(stat -c %s "$out")

# Frame count, and key frames exactly at 0, N*x, 2*N*x, ... (frame tag, RFC 6386 section 9.1).
check=$(python3 -c "
import sys
from codec.chunks import frame_tag
from codec.ivf import read_ivf
from media.video import open_video
n, period = int(sys.argv[2]), int(sys.argv[3])
with open_video(sys.argv[4]) as video:
    inputs = sum(1 for _ in video)
frames = [r.data for r in read_ivf(sys.argv[1])[1]]
tags = [frame_tag(d) for d in frames]
shown = sum(t.show_frame for t in tags)
keys = [i for i, t in enumerate(tags) if t.key_frame]
want = list(range(0, len(frames), n * period))
problems = []
if shown != inputs or len(frames) != inputs:
    problems.append(f'{len(frames)} frames ({shown} shown) for {inputs} input pictures')
if keys != want:
    problems.append(f'key frames at {keys}, expected {want}')
print('; '.join(problems) if problems else f'{inputs} {len(keys)}')
sys.exit(1 if problems else 0)
" "$out" "$N" "$X" "$stream") || { echo "MISMATCH in the ExCamera stream: $check" >&2; exit 1; }
read -r frames keys <<< "$check"

excamera decode "$out" --frame-md5 > "$work/ours.md5"
if command -v vpxdec > /dev/null; then
    (cd "$work" && vpxdec --i420 --md5 -o "x-%wx%h-%4.i420" "$out") > "$work/vpxdec.md5"
    if ! diff <(cut -d' ' -f1 "$work/ours.md5") <(cut -d' ' -f1 "$work/vpxdec.md5") > /dev/null; then
        echo "MISMATCH: vpxdec decodes the ExCamera stream to other pictures than excamera decode" >&2
        diff <(cut -d' ' -f1 "$work/ours.md5") <(cut -d' ' -f1 "$work/vpxdec.md5") | head -10 >&2
        exit 1
    fi
    libvpx="vpxdec shows the same $(wc -l < "$work/vpxdec.md5") pictures as excamera decode"
else
    libvpx="vpxdec not installed: the libvpx cross-check was skipped (apt-get install vpx-tools)"
fi

# SSIM (All planes) against the input; far below the encode's quality would mean a broken rebase.
ssim=$(excamera ssim "$stream" "$out" | sed -E 's/.*All ([0-9.]+) \(([0-9.]+) dB\).*/\1 \2/')
read -r ssim_all ssim_db <<< "$ssim"
if ! python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.95 else 1)" "$ssim_all"; then
    echo "MISMATCH: SSIM $ssim_all against the input is below 0.95" >&2
    exit 1
fi
echo "excamera encode (ExCamera[$N,$X], cq-level 20): $frames frames, $keys key frame(s) (every $((N * X))), $bytes bytes, SSIM $ssim_all ($ssim_db dB) against the input, encoded in ${secs}s"
echo "$libvpx"

# The same encode spread over two local worker processes (coordinator, rendezvous and workers over
# mutual-TLS gRPC on loopback) must give the same bytes as the encode above (libvpx first pass).
start=$(date +%s.%N)
excamera encode "$stream" -o "$work/w2.ivf" --workers 2 2> /dev/null
secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$start" "$(date +%s.%N)")
if ! cmp -s "$out" "$work/w2.ivf"; then
    echo "MISMATCH: excamera encode --workers 2 differs from --workers 0" >&2
    exit 1
fi
echo "excamera encode --workers 2: byte-identical to --workers 0 ($(stat -c %s "$work/w2.ivf") bytes, in ${secs}s)"

# -- 3. pipelines ---------------------------------------------------------------------------------
mkdir -p out/demo
excamera encode "$stream" -o out/demo/foreman_excamera.webm --workers 2 2> /dev/null

mirror=out/demo/bikes_mirror.webm
start=$(now)
excamera pipeline run pipelines/mirror.json -i input_0=tests/data/clips/compressed/bikes_640x272_100f.mp4 \
    -o output_0=$mirror --workers 2 --timeline "$work/mirror_timeline.json" 2> "$work/mirror.log" \
    || { cat "$work/mirror.log" >&2; exit 1; }
secs=$(since "$start")
chart=out/demo/bikes_mirror_tasks.png
excamera timeline "$work/mirror_timeline.json" -o $chart
count() { python3 -c "
import sys
from media.video import open_video
with open_video(sys.argv[1]) as v:
    print(sum(1 for _ in v), f'{v.width}x{v.height}')" "$1"; }
read -r n size <<< "$(count $mirror)"
[ "$n" = 100 ] || { echo "MISMATCH: the mirror pipeline wrote $n frames, not 100" >&2; exit 1; }
echo "excamera pipeline run pipelines/mirror.json: $n frames, $size (left half beside its mirror image), in ${secs}s"

found=out/demo/found_person.webm
start=$(now)
excamera pipeline run pipelines/find_person.json -i input_0=tests/data/vision/scenes.mp4 \
    -i input_1=tests/data/vision/person.png -o output_0=$found --workers 2 2> "$work/find.log" \
    || { cat "$work/find.log" >&2; exit 1; }
secs=$(since "$start")
read -r n size <<< "$(count $found)"
[ "$n" = 16 ] || { echo "MISMATCH: find_person kept $n frames, not the person's 2 scenes of 8" >&2; exit 1; }
echo "excamera pipeline run pipelines/find_person.json: kept the person's 2 scenes of 7 ($n frames, boxes drawn), in ${secs}s"

# Video stabilisation: foreman shaken by a random jump of up to 8 px a frame (demo/make_shaky.py),
# then steadied by pipelines/stabilize.json (motion per chunk, one smoothing step, per-chunk warp).
shaky=out/demo/foreman_shaky.webm
steady=out/demo/foreman_steadied.webm
python3 demo/make_shaky.py "$stream" "$work/shaky.ivf" $shaky
start=$(now)
excamera pipeline run pipelines/stabilize.json -i "$work/shaky.ivf" -o $steady --workers 2 2> "$work/stab.log" \
    || { cat "$work/stab.log" >&2; exit 1; }
read -r n size <<< "$(count $steady)"
[ "$n" = 60 ] || { echo "MISMATCH: the stabilize pipeline wrote $n frames, not 60" >&2; exit 1; }
echo "excamera pipeline run pipelines/stabilize.json: $n frames, $size, the shaken foreman steadied, in $(since "$start")s"

# -- 4. sound -------------------------------------------------------------------------------------
# A clip with a soundtrack (Big Buck Bunny, H.264 + AAC): the ExCamera encode as WebM (the AAC
# transcoded to Opus), and the mirror pipeline written as MP4 (H.264 + the AAC copied), HLS and
# DASH; the sound stays in step with the pictures (tests/test_audio.py measures it).
bbb=tests/data/clips/compressed/bigbuckbunny_320x180_5s_aac.mp4
start=$(now)
excamera encode $bbb -o out/demo/bunny_excamera.webm --workers 2 2> "$work/bunny.log" \
    || { cat "$work/bunny.log" >&2; exit 1; }
echo "excamera encode $bbb: VP8 with the sound as Opus, in $(since "$start")s"
rm -f out/demo/bunny_mirror.* out/demo/bunny_mirror-*    # an earlier run's segments
for ext in mp4 m3u8 mpd; do
    excamera pipeline run pipelines/mirror.json -i input_0=$bbb -o output_0=out/demo/bunny_mirror.$ext \
        --workers 2 2> "$work/bunny_$ext.log" || { cat "$work/bunny_$ext.log" >&2; exit 1; }
done
echo "excamera pipeline run pipelines/mirror.json on it: .mp4 (H.264 + AAC), .m3u8 (HLS), .mpd (DASH)"

page=$(python3 demo/make_page.py out/demo \
    "ExCamera encode, with its sound=out/demo/bunny_excamera.webm:sound" \
    "Mirror pipeline as MP4 (H.264 + AAC)=out/demo/bunny_mirror.mp4:sound" \
    "ExCamera encode of foreman (no soundtrack in the source)=out/demo/foreman_excamera.webm" \
    "Mirror pipeline on bikes (no soundtrack in the source)=$mirror" \
    "Scenes with the person found (no soundtrack in the source)=$found" \
    "Foreman shaken (no soundtrack in the source)=$shaky" \
    "Foreman shaken, then steadied by pipelines/stabilize.json=$steady" \
    --stream "Mirror pipeline as HLS=out/demo/bunny_mirror.m3u8" \
    --stream "Mirror pipeline as DASH=out/demo/bunny_mirror.mpd" \
    --chart $chart)
echo
echo "Open this page in a browser; it plays every result (with sound where the source had it):"
echo "  $(pwd)/$page"
