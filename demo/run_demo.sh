#!/usr/bin/env bash
# Decode the demo stream (real foreman CIF footage, with hidden alt-ref frames) with excamera and
# check every frame against libvpx's MD5s (made with vpxdec; see tests/data/SOURCES.md).
set -euo pipefail
cd "$(dirname "$0")/.."
stream=demo/foreman_cif_60f.ivf
expected=demo/foreman_cif_60f.ivf.md5
got=$(mktemp)
trap 'rm -f "$got"' EXIT

start=$(date +%s.%N)
excamera decode "$stream" --frame-md5 > "$got"
end=$(date +%s.%N)

n=$(wc -l < "$expected")
size=$(head -1 "$got" | sed -E 's/.*-([0-9]+x[0-9]+)-[0-9]+\.i420$/\1/')
ivf_frames=$(python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(); i=32; n=0
while i < len(d): i += 12 + struct.unpack_from('<I', d, i)[0]; n += 1
print(n)" "$stream")
secs=$(python3 -c "print(f'{$end - $start:.2f}')")
echo "$stream: $ivf_frames IVF frames, $(wc -l < "$got") shown, $size, decoded in ${secs}s"
if diff <(sort -k2 "$expected") <(sort -k2 "$got") > /dev/null; then
    echo "all $n frames match libvpx"
else
    echo "MISMATCH against libvpx:" >&2
    diff <(sort -k2 "$expected") <(sort -k2 "$got") | head -20 >&2
    exit 1
fi
