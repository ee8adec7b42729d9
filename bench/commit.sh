#!/bin/bash
# Commit cost against the size of the change, side by side in one run: in a container of the
# bench VM image (/var/tmp/decant-bench/disk.qcow2, made by bench/make-vm.sh; the example image
# when absent) change 1 file, then 1000 files, then write 100 MB, each in a fresh container,
# and time
#   - `decant commit` (reads only the overlay upper dir),
#   - `umoci repack` of the same change (the image unpacked once with umoci, the same change
#     made in its rootfs; umoci finds the change by walking the whole rootfs against its mtree),
#   - a full re-tar of the rootfs (`tar -c | gzip -1`, what a commit without an upper dir costs).
# Prints medians in ms. Target: 1 changed file under 50 ms. Root. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/commit.sh: run as root" >&2; exit 1; }
for t in hyperfine umoci tar gzip python3; do command -v $t >/dev/null || { echo "bench/commit.sh: $t missing (apt-get install hyperfine umoci)" >&2; exit 1; }; done
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/decant
W=$(mktemp -d /var/tmp/decant-commitbench.XXXX)
cleanup() {
  for c in cb1 cb1000 cb100m; do "$BIN" rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$W"
}
trap cleanup EXIT
export DECANT_ROOT=$W/store
DISK=/var/tmp/decant-bench/disk.qcow2
if [ ! -f "$DISK" ]; then
  echo "bench/commit.sh: $DISK absent; using the example image" >&2
  bash testdata/make-example.sh "$W/example" >/dev/null
  DISK=$W/example/disk.qcow2
fi
"$BIN" import -q -t bench:vm "$DISK" >/dev/null
REF=$(python3 -c 'import json,sys; print([m["annotations"]["org.opencontainers.image.ref.name"] for m in json.load(open(sys.argv[1]))["manifests"] if "bench" in m["annotations"]["org.opencontainers.image.ref.name"]][0])' "$W/store/index.json")
# umoci works on a copy of the layout (it adds its own manifests).
mkdir -p "$W/layout"
cp -a "$W/store/oci-layout" "$W/store/index.json" "$W/store/blobs" "$W/layout/"
echo "unpacking with umoci (once)..." >&2
umoci unpack --image "$W/layout:$REF" "$W/bundle" >/dev/null
ROOTFS=$W/bundle/rootfs

declare -A CHANGE=(
  [1]='echo changed > /etc/motd'
  [1000]='mkdir -p /opt/many && i=0; while [ $i -lt 1000 ]; do echo $i > /opt/many/f$i; i=$((i+1)); done'
  [100m]='(dd if=/dev/urandom of=/opt/big bs=1M count=100 || busybox dd if=/dev/urandom of=/opt/big bs=1M count=100) 2>/dev/null'
)
RESULTS=$W/results
: > "$RESULTS"
for k in 1 1000 100m; do
  c=cb$k
  "$BIN" run -d --name "$c" bench:vm sleep 100000 >/dev/null
  "$BIN" exec "$c" sh -c "${CHANGE[$k]}"
  # The same change in umoci's rootfs (with chroot, the same shell commands; the 100 MB from
  # the host, as umoci's rootfs has no /dev).
  if [ "$k" = 100m ]; then
    mkdir -p "$ROOTFS/opt"; dd if=/dev/urandom of="$ROOTFS/opt/big" bs=1M count=100 2>/dev/null
  else
    chroot "$ROOTFS" sh -c "${CHANGE[$k]}"
  fi
  hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$W/d$k.json" \
    -n "decant commit ($k)" "$BIN commit $c bench:out$k" >/dev/null
  hyperfine -N --warmup 0 --runs "${RUNS_SLOW:-3}" --export-json "$W/u$k.json" \
    -n "umoci repack ($k)" "umoci repack --image $W/layout:u$k $W/bundle" >/dev/null
  hyperfine --warmup 0 --runs "${RUNS_SLOW:-3}" --export-json "$W/t$k.json" \
    -n "full re-tar ($k)" "tar -C $ROOTFS --xattrs -cf - . | gzip -1 > $W/full.tar.gz" >/dev/null
  for f in d u t; do echo "$W/$f$k.json" >> "$RESULTS"; done
  "$BIN" rm -f "$c" >/dev/null
done
echo "rootfs: $(du -sh --apparent-size "$ROOTFS" | cut -f1) in $(find "$ROOTFS" | wc -l) entries"
python3 - "$RESULTS" <<'PY'
import json, sys
rows = {}
for path in open(sys.argv[1]).read().split():
    for x in json.load(open(path))["results"]:
        t = sorted(x["times"])
        rows[x["command"]] = t[len(t) // 2] * 1000
for k, v in rows.items():
    print(f"{k:26s} {v:9.1f} ms median")
one = rows.get("decant commit (1)")
if one is not None:
    print(f"decant commit of 1 changed file: {one:.1f} ms (target < 50 ms): {'OK' if one < 50 else 'MISSED'}")
PY
