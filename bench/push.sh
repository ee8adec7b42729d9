#!/bin/bash
# Push speed against a real registry, side by side in one run: Debian's docker-registry on a free
# 127.0.0.1 port; the bench VM image (/var/tmp/decant-bench/disk.qcow2 imported with the release
# binary, or the example image when that disk is absent) pushed with `decant push` and with
# `skopeo copy oci:STORE:REF docker://...` of the same image, each into a registry with empty
# storage, RUNS times. Prints medians, the ratio (target <= 1.0), and what a re-push of the
# unchanged image costs in requests, counted in the registry's log (target: one HEAD per blob and
# one manifest PUT; push sends no /v2/ ping, it learns the auth scheme from the first answer).
set -euo pipefail
cd "$(dirname "$0")/.."
for t in docker-registry skopeo python3 bc; do command -v $t >/dev/null || { echo "bench/push.sh: $t missing (apt-get install docker-registry skopeo python3 bc)" >&2; exit 1; }; done
RUNS=${RUNS:-3}
cargo build --release -q -p decant
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/decant
W=$(mktemp -d /var/tmp/decant-pushbench.XXXX)
REG_PID=
cleanup() { if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi; rm -rf "$W"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Empty storage for every measured push: distribution would otherwise find the blobs of an
# earlier run, and skopeo's blob-info cache would mount them instead of uploading.
N=0
start_registry() {
  N=$((N + 1))
  printf 'version: 0.1\nlog: {level: info}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s, secret: decant-bench}\n' \
    "$W/data$N" "$PORT" > "$W/config.yml"
  docker-registry serve "$W/config.yml" >"$W/registry$N.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 200); do grep -q "listening on 127.0.0.1:$PORT" "$W/registry$N.log" && break; sleep 0.05; done
  grep -q "listening on 127.0.0.1:$PORT" "$W/registry$N.log" || { echo "bench/push.sh: registry did not start" >&2; cat "$W/registry$N.log" >&2; exit 1; }
}
stop_registry() { kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=; rm -rf "$W/data$N"; }

export DECANT_ROOT=$W/store
DISK=/var/tmp/decant-bench/disk.qcow2
if [ -f "$DISK" ]; then
  SRC=$DISK
else
  bash testdata/make-example.sh "$W/example" >/dev/null
  SRC=$W/example/root.ext4
  echo "bench/push.sh: $DISK absent, pushing the example image instead" >&2
fi
"$BIN" import -t bench:vm "$SRC" >/dev/null 2>&1
SIZE=$(python3 - "$W/store" <<'PY'
import json, os, sys
s = sys.argv[1]
ix = json.load(open(os.path.join(s, "index.json")))
m = [d for d in ix["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "docker.io/library/bench:vm"][0]
man = json.load(open(os.path.join(s, "blobs/sha256", m["digest"].split(":")[1])))
print(sum(l["size"] for l in man["layers"]) + man["config"]["size"])
PY
)
now() { date +%s.%N; }
D=(); S=()
for _ in $(seq "$RUNS"); do
  rm -f "$W/store/.decant/blob-sources.json"
  start_registry
  t0=$(now); "$BIN" push --tls-verify=false bench:vm "127.0.0.1:$PORT/decant:vm" >/dev/null; t1=$(now)
  stop_registry
  start_registry
  t2=$(now); skopeo copy -q --dest-tls-verify=false "oci:$W/store:docker.io/library/bench:vm" "docker://127.0.0.1:$PORT/skopeo:vm" >/dev/null; t3=$(now)
  stop_registry
  D+=("$(echo "$t1 - $t0" | bc)"); S+=("$(echo "$t3 - $t2" | bc)")
done
start_registry
LOG=$W/registry$N.log
"$BIN" push --tls-verify=false bench:vm "127.0.0.1:$PORT/decant:vm" >/dev/null
before=$(grep -c 'msg="response completed' "$LOG")
"$BIN" push --tls-verify=false bench:vm "127.0.0.1:$PORT/decant:vm" >/dev/null
after=$(grep -c 'msg="response completed' "$LOG")
REPUSH=$(grep 'msg="response completed' "$LOG" | tail -n $((after - before)) | grep -o 'http.request.method=[A-Z]*' | sort | uniq -c | awk '{printf "%s %s, ", $1, substr($2, 21)}')
python3 - "$SIZE" "${D[*]}" "${S[*]}" "$((after - before))" "$REPUSH" <<'PY'
import statistics, sys
size = int(sys.argv[1])
d = [float(x) for x in sys.argv[2].split()]
s = [float(x) for x in sys.argv[3].split()]
md, ms = statistics.median(d), statistics.median(s)
print(f"image: {size / 1e6:.1f} MB compressed (layers + config), {len(d)} runs each, empty registry each time")
print(f"decant push   {md * 1000:8.0f} ms median  ({size / md / 1e6:6.1f} MB/s)  runs: {' '.join(f'{x:.2f}' for x in d)}")
print(f"skopeo copy   {ms * 1000:8.0f} ms median  ({size / ms / 1e6:6.1f} MB/s)  runs: {' '.join(f'{x:.2f}' for x in s)}")
print(f"decant / skopeo = {md / ms:.2f} (target <= 1.0)")
print(f"re-push of the unchanged image: {sys.argv[4]} requests ({sys.argv[5].rstrip(', ')})")
PY
