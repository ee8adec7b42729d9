#!/bin/bash
# Seeds for the `disk` and `volume` fuzz targets: without them the fuzzer starts from nothing and
# rarely finds a qcow2/VDI/VMDK/VHD/VHDX header's magic, let alone a valid table behind it.
#
#   fuzz/seed.sh           unpacks the committed seeds (fuzz/seeds/TARGET/*.gz) into
#                          fuzz/corpus/TARGET/, then, when qemu-img and sfdisk are there, makes
#                          fresh ones beside them (every format and variant, VHDX included)
#   fuzz/seed.sh --store   remakes the committed seeds (small ones only; gzip -n, since the images
#                          are mostly zeros)
#
# The images come from a 64 KiB raw disk with an MBR signature and one written sector (a real
# partition table for the volume target), so each format's allocation path is taken and the
# seeds stay small. bench/fuzz.sh runs this first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
STORE=0
[ "${1:-}" = "--store" ] && STORE=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

have() { command -v "$1" >/dev/null; }

make_seeds() { # OUT_DISK OUT_VOLUME
  local d="$1" v="$2" w="$WORK/gen"
  rm -rf "$w"; mkdir -p "$w" "$d" "$v"
  # The data disk: a sector of text and an MBR signature; and an all-zero one (no allocation,
  # for the formats whose smallest allocation is 1-2 MiB).
  truncate -s 64K "$w/data.raw"
  printf 'decant fuzz seed: one written sector' | dd of="$w/data.raw" bs=512 seek=1 conv=notrunc status=none
  printf '\x55\xaa' | dd of="$w/data.raw" bs=1 seek=510 conv=notrunc status=none
  truncate -s 64K "$w/zero.raw"
  local q=(qemu-img convert -q)
  "${q[@]}" -O qcow2 -o cluster_size=512 "$w/data.raw" "$d/v3.qcow2"
  "${q[@]}" -O qcow2 -o compat=0.10,cluster_size=512 "$w/data.raw" "$d/v2.qcow2"
  "${q[@]}" -c -O qcow2 -o cluster_size=512 "$w/data.raw" "$d/deflate.qcow2"
  "${q[@]}" -c -O qcow2 -o cluster_size=512,compression_type=zstd "$w/data.raw" "$d/zstd.qcow2"
  "${q[@]}" -O qcow2 -o cluster_size=16384,extended_l2=on "$w/data.raw" "$d/extl2.qcow2"
  (cd "$d" && qemu-img create -q -f qcow2 -o cluster_size=512 -b v3.qcow2 -F qcow2 overlay.qcow2)
  "${q[@]}" -O vdi "$w/zero.raw" "$d/dynamic.vdi"
  "${q[@]}" -O vdi "$w/data.raw" "$d/dynamic-data.vdi"
  "${q[@]}" -O vdi -o static=on "$w/data.raw" "$d/fixed.vdi"
  for sf in monolithicSparse streamOptimized monolithicFlat twoGbMaxExtentSparse; do
    "${q[@]}" -O vmdk -o subformat=$sf "$w/data.raw" "$d/$sf.vmdk"
  done
  "${q[@]}" -O vpc "$w/zero.raw" "$d/dynamic.vhd"
  "${q[@]}" -O vpc "$w/data.raw" "$d/dynamic-data.vhd"
  "${q[@]}" -O vpc -o subformat=fixed "$w/data.raw" "$d/fixed.vhd"
  "${q[@]}" -O vhdx -o block_size=1M,log_size=1M "$w/zero.raw" "$d/dynamic.vhdx"
  cp "$w/data.raw" "$d/mbr.raw"
  # Partition tables for the volume target: MBR with logical partitions (an EBR chain) and GPT.
  truncate -s 64K "$w/mbr.img" "$w/gpt.img"
  printf 'label: dos\nstart=1, size=16, type=83\nstart=17, size=100, type=5\nstart=18, size=20, type=82\nstart=40, size=60, type=83\n' |
    sfdisk -q --no-reread --no-tell-kernel "$w/mbr.img" >/dev/null
  printf 'label: gpt\nfirst-lba: 34\nstart=34, size=40, name="boot"\nstart=74, size=20, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n' |
    sfdisk -q --no-reread --no-tell-kernel "$w/gpt.img" >/dev/null
  cp "$w/mbr.img" "$v/mbr-logical.raw"
  cp "$w/gpt.img" "$v/gpt.raw"
}

if [ $STORE = 1 ]; then
  have qemu-img && have sfdisk || { echo "seed.sh --store needs qemu-img and sfdisk" >&2; exit 1; }
  make_seeds "$WORK/disk" "$WORK/volume"
  for t in disk volume; do
    rm -rf "$HERE/seeds/$t"; mkdir -p "$HERE/seeds/$t"
    for f in "$WORK/$t"/*; do
      # A few KB compressed each; anything bigger is left to the plain run.
      gzip -n -9 -c "$f" > "$WORK/seed.gz"
      [ "$(stat -c %s "$WORK/seed.gz")" -le 32768 ] || continue
      mv "$WORK/seed.gz" "$HERE/seeds/$t/$(basename "$f").gz"
    done
  done
  du -sb "$HERE/seeds"
  exit 0
fi

for t in disk volume; do
  mkdir -p "$HERE/corpus/$t"
  for f in "$HERE/seeds/$t"/*.gz; do
    [ -e "$f" ] || continue
    gzip -dc "$f" > "$HERE/corpus/$t/seed-$(basename "$f" .gz)"
  done
done
if have qemu-img && have sfdisk; then
  make_seeds "$WORK/disk" "$WORK/volume"
  for t in disk volume; do
    for f in "$WORK/$t"/*; do cp "$f" "$HERE/corpus/$t/fresh-$(basename "$f")"; done
  done
fi
echo "seed.sh: $(find "$HERE/corpus/disk" -type f | wc -l) files in corpus/disk, $(find "$HERE/corpus/volume" -type f | wc -l) in corpus/volume"
