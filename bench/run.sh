#!/bin/bash
# Container start latency, side by side in one run: `decant run --rm IMAGE true` (layers
# cached, overlay mount, state, monitor), `decant runtime run` on a bundle, `runc run` on the
# same bundle, and `crun run`, all in one private mount namespace with /sys/fs/cgroup/unified
# unmounted (crun 1.8 refuses this hybrid host otherwise). Prints medians and ratios, then the
# resident set of a detached container's monitor (target 2 MB): idle 2 s after start, right after
# 6000 lines of output, and after 10 s of quiet. Root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }
for t in hyperfine runc crun busybox; do command -v $t >/dev/null || { echo "bench/run.sh: $t missing (apt-get install hyperfine runc crun busybox-static)" >&2; exit 1; }; done
cargo build --release -q
BIN=$PWD/target/release/decant
W=$(mktemp -d /var/tmp/decant-runbench.XXXX); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bundle/rootfs/bin"; cp "$(command -v busybox)" "$W/bundle/rootfs/bin/busybox"
ln -s busybox "$W/bundle/rootfs/bin/true"; ln -s busybox "$W/bundle/rootfs/bin/sh"
(cd "$W/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)
# The same rootfs as an image in a store, for `decant run`.
tar -C "$W/bundle/rootfs" -cf "$W/rootfs.tar" .
export DECANT_ROOT=$W/store
"$BIN" import "$W/rootfs.tar" --tag bench:true -q >/dev/null
"$BIN" run --rm bench:true true   # warm the layer cache
# All four run in one private mount namespace without the cgroup2 mount (crun refuses this
# hybrid host with it), so each is invoked directly and measured the same way.
unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec hyperfine -N --warmup 5 --runs ${RUNS:-50} --export-json $W/h.json \
  -n 'decant run' '$BIN run --rm bench:true true' \
  -n 'decant runtime' '$BIN runtime --root $W/state run --bundle $W/bundle b1' \
  -n 'runc' 'runc --root $W/runc run --bundle $W/bundle b2' \
  -n 'crun' 'crun --root $W/crun run --bundle $W/bundle b3'" >/dev/null
python3 - "$W/h.json" <<'PY'
import json, sys
r = {x["command"]: sorted(x["times"])[len(x["times"]) // 2] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
for k, v in r.items():
    print(f"{k:16s} {v:7.1f} ms median")
print(f"decant runtime / crun = {r['decant runtime'] / r['crun']:.2f} (target <= 1.0)")
print(f"decant run / crun     = {r['decant run'] / r['crun']:.2f} (target <= 1.5)")
print(f"decant run / runc     = {r['decant run'] / r['runc']:.2f} (target <= 0.5)")
PY

# The monitor's resident set.
rss() { grep VmRSS "/proc/$1/status" | awk '{printf "%.2f MB", $2 / 1024}'; }
id=$("$BIN" run -d bench:true sh -c 'sleep 4; i=0; while [ $i -lt 3000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done; sleep 30')
sleep 2
mon=$(pgrep -x decant-monitor -n)
idle=$(rss "$mon"); sleep 4; busy=$(rss "$mon"); sleep 11; quiet=$(rss "$mon")
"$BIN" rm -f "$id" >/dev/null
echo "monitor RSS: idle $idle, after 6000 log lines $busy, after 10 s quiet $quiet (target <= 2 MB)"
