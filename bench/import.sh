#!/bin/bash
# Import benchmark: the old recipe (as root: mount, tar --xattrs | pigz or zstd, sha256sum)
# against `decant import` (as an unprivileged user), on the same real Debian VM, in the same
# run. Prints ratios (decant / recipe): the machine is shared and noisy, absolute times are not
# comparable between runs. Not a CI gate.
#
#   bench/import.sh [WORK]     WORK defaults to /var/tmp/decant-bench (cached VM, ~2 GB)
#   RUNS=N (default 3, median), FORMATS="ext4 raw qcow2 ..." to choose sources.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/var/tmp/decant-bench}
RUNS=${RUNS:-3}
FORMATS=${FORMATS:-"ext4 raw qcow2 zlib.qcow2 vdi vmdk stream.vmdk"}
[ "$(id -u)" = 0 ] || { echo "bench/import.sh: run as root (the recipe mounts; decant runs as nobody)" >&2; exit 1; }
bench/make-vm.sh "$WORK" >/dev/null
cargo build --release -q
BIN=$WORK/decant; cp target/release/decant "$BIN"; chmod 755 "$BIN"
chmod o+rx "$WORK"; chmod o+r "$WORK"/*.ext4 "$WORK"/disk.*
OUT=$(mktemp -d /var/tmp/decant-bench-out.XXXX); chmod 777 "$OUT"
MNT=$OUT/mnt; mkdir -p "$MNT"
trap 'umount -R "$MNT" 2>/dev/null || true; rm -rf "$OUT"' EXIT

# median of RUNS runs of a command: prints "seconds maxrss_kb"
measure() {
  local times=() rss=0 t
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$OUT/time" bash -c "$1" >/dev/null 2>"$OUT/err" || { cat "$OUT/err" >&2; return 1; }
    t=$(tail -1 "$OUT/time"); times+=("${t% *}"); [ "${t#* }" -gt "$rss" ] && rss=${t#* }
  done
  printf '%s %s\n' "$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')" "$rss"
}
as_user() { echo "setpriv --reuid=65534 --regid=65534 --clear-groups env DECANT_ROOT=$OUT/store-\$\$ $BIN $*; rm -rf $OUT/store-*"; }

recipe_source() { # FORMAT -> commands that mount the guest (root + /boot) at $MNT, and undo them
  local f=$1
  if [ "$f" = ext4 ]; then
    MOUNT="mount -o ro,loop $WORK/rootfs.ext4 $MNT"; UMOUNT="umount $MNT"; return
  fi
  local raw=$WORK/disk.raw conv=""
  if [ "$f" != raw ]; then raw=$OUT/conv.raw; conv="qemu-img convert -O raw $WORK/disk.$f $raw && "; fi
  MOUNT="${conv}L=\$(losetup -f --show $raw) && partx -a \$L && mount -o ro \${L}p2 $MNT && mount -o ro \${L}p1 $MNT/boot"
  UMOUNT="umount $MNT/boot; umount $MNT; partx -d \$L; losetup -d \$L; rm -f $OUT/conv.raw"
}

TAR="tar --xattrs --xattrs-include='*' --numeric-owner -C $MNT -cf - ."
printf '%-12s %-5s %9s %9s %7s %9s %9s %7s %9s\n' source comp recipe_s decant_s ratio recipe_MB decant_MB size_x decant_RSS
for f in $FORMATS; do
  src=$WORK/disk.$f; [ "$f" = ext4 ] && src=$WORK/rootfs.ext4
  recipe_source "$f"
  for comp in gzip zstd; do
    if [ $comp = gzip ]; then Z="pigz -6 -p2"; else Z="zstd -T0 -3 -q"; fi
    R=$(measure "$MOUNT && { $TAR | $Z > $OUT/recipe.out; sha256sum $OUT/recipe.out; }; $UMOUNT")
    # The recipe's output size (one more run, kept).
    bash -c "$MOUNT && { $TAR | $Z > $OUT/recipe.out; }; $UMOUNT" 2>/dev/null
    rsize=$(stat -c %s "$OUT/recipe.out")
    D=$(measure "$(as_user import "$src" --quiet --compression $comp --keep-boot --keep-modules)")
    setpriv --reuid=65534 --regid=65534 --clear-groups env DECANT_ROOT="$OUT/keep" "$BIN" import "$src" --quiet --compression $comp --keep-boot --keep-modules --format json > "$OUT/report.json"
    dsize=$(python3 -c "import json;print(json.load(open('$OUT/report.json'))['layer']['size'])")
    rm -rf "$OUT/keep"
    awk -v f="$f" -v c=$comp -v r="${R% *}" -v d="${D% *}" -v rs="$rsize" -v ds="$dsize" -v rss="${D#* }" \
      'BEGIN{printf "%-12s %-5s %9.2f %9.2f %7.2f %9.1f %9.1f %7.3f %7.0fMB\n", f, c, r, d, d/r, rs/1e6, ds/1e6, ds/rs, rss/1024}'
  done
done
echo "ratio = decant time / recipe time (lower is better); size_x = decant layer / recipe output."
echo "--keep-boot --keep-modules so both sides carry the same files; decant still truncates hole-filled logs."
