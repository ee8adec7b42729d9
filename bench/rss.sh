#!/bin/bash
# Peak memory of `decant import` must not grow with the disk: the same Debian root in a 2 GiB
# and in an 8 GiB GPT disk (qcow2), imported as an unprivileged user; prints both peaks and
# their ratio. Not a CI gate. Needs root (builds the disks) and bench/make-vm.sh's rootfs.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/var/tmp/decant-bench}
[ "$(id -u)" = 0 ] || { echo "bench/rss.sh: run as root" >&2; exit 1; }
bench/make-vm.sh "$WORK" >/dev/null
cargo build --release -q
BIN=$WORK/decant; cp target/release/decant "$BIN"; chmod 755 "$BIN"
for size in 2 8; do
  img=$WORK/disk${size}g.qcow2
  if [ ! -e "$img" ]; then
    raw=$WORK/disk${size}g.raw
    rm -f "$raw"; truncate -s ${size}G "$raw"
    # The root partition fills the disk but for 1 MiB at each end (MBR/GPT, backup GPT).
    part_sectors=$(( size * 1024 * 1024 * 2 - 4096 ))
    printf 'label: gpt\nstart=2048, size=%d, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n' "$part_sectors" | sfdisk -q "$raw"
    mkfs.ext4 -q -F -d "$WORK/rootfs" -E root_owner=0:0,offset=$((2048 * 512)) "$raw" $((part_sectors / 2))k >/dev/null
    qemu-img convert -O qcow2 "$raw" "$img"; rm -f "$raw"
  fi
  chmod o+r "$img"
done
peak() {
  local s; s=$(mktemp -d /var/tmp/decant-rss.XXXX); chmod 777 "$s"
  /usr/bin/time -f %M -o "$s/rss" setpriv --reuid=65534 --regid=65534 --clear-groups \
    env DECANT_ROOT="$s/store" "$BIN" import "$1" --quiet --keep-boot --keep-modules --compression "$2" >/dev/null \
    || { echo "bench/rss.sh: import of $1 failed" >&2; exit 1; }
  cat "$s/rss"; rm -rf "$s"
}
printf '%-6s %12s %12s %7s\n' comp 2GiB_RSS_MB 8GiB_RSS_MB ratio
for comp in gzip zstd; do
  a=$(peak "$WORK/disk2g.qcow2" $comp); b=$(peak "$WORK/disk8g.qcow2" $comp)
  awk -v c=$comp -v a="$a" -v b="$b" 'BEGIN{printf "%-6s %12.1f %12.1f %7.2f\n", c, a/1024, b/1024, b/a}'
done
