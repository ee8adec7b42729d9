#!/bin/bash
# Push speed against a real registry, side by side in one run: Debian's docker-registry on a free
# 127.0.0.1 port with temp storage; the bench VM image (/var/tmp/decant-bench/disk.qcow2 imported
# with the release binary, or the example image when that disk is absent) pushed with
# `decant push` and with `skopeo copy oci:STORE:REF docker://...` of the same image, each to a
# fresh repository, RUNS times. Prints medians, the ratio (target <= 1.0), and what a re-push of
# the unchanged image costs in requests, counted in the registry's log (target: one HEAD per blob
# and one manifest PUT, plus the /v2/ ping).
set -euo pipefail
cd "$(dirname "$0")/.."
for t in docker-registry skopeo python3; do command -v $t >/dev/null || { echo "bench/push.sh: $t missing (apt-get install docker-registry skopeo python3)" >&2; exit 1; }; done
RUNS=${RUNS:-3}
cargo build --release -q -p decant
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/decant
W=$(mktemp -d /var/tmp/decant-pushbench.XXXX)
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$W/config.yml" <<EOF
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $W/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT, secret: decant-bench}
EOF
docker-registry serve "$W/config.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 200); do grep -q "listening on 127.0.0.1:$PORT" "$W/registry.log" && break; sleep 0.05; done
grep -q "listening on 127.0.0.1:$PORT" "$W/registry.log" || { echo "bench/push.sh: registry did not start" >&2; cat "$W/registry.log" >&2; exit 1; }

export DECANT_ROOT=$W/store
DISK=/var/tmp/decant-bench/disk.qcow2
if [ -f "$DISK" ]; then
  SRC=$DISK
else
  bash testdata/make-example.sh "$W/example" >/dev/null
  SRC=$W/example/root.ext4
  echo "bench/push.sh: $DISK absent, pushing the example image instead" >&2
fi
"$BIN" import -t bench:vm "$SRC" >/dev/null
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
for i in $(seq "$RUNS"); do
  # No mount hints between runs: every run uploads every byte.
  rm -f "$W/store/.decant/blob-sources.json"
  t0=$(now); "$BIN" push --tls-verify=false bench:vm "127.0.0.1:$PORT/decant$i:vm" >/dev/null; t1=$(now)
  skopeo copy -q --dest-tls-verify=false "oci:$W/store:docker.io/library/bench:vm" "docker://127.0.0.1:$PORT/skopeo$i:vm" >/dev/null; t2=$(now)
  D+=("$(echo "$t1 - $t0" | bc)"); S+=("$(echo "$t2 - $t1" | bc)")
done
before=$(grep -c 'msg="response completed' "$W/registry.log")
"$BIN" push --tls-verify=false bench:vm "127.0.0.1:$PORT/decant1:vm" >/dev/null
after=$(grep -c 'msg="response completed' "$W/registry.log")
REPUSH=$(grep 'msg="response completed' "$W/registry.log" | tail -n $((after - before)) | grep -o 'http.request.method=[A-Z]*' | sort | uniq -c | awk '{printf "%s %s, ", $1, substr($2, 21)}')
python3 - "$SIZE" "${D[*]}" "${S[*]}" "$((after - before))" "$REPUSH" <<'PY'
import statistics, sys
size = int(sys.argv[1])
d = [float(x) for x in sys.argv[2].split()]
s = [float(x) for x in sys.argv[3].split()]
md, ms = statistics.median(d), statistics.median(s)
print(f"image: {size / 1e6:.1f} MB compressed (layers + config), {len(d)} runs each")
print(f"decant push   {md * 1000:8.0f} ms median  ({size / md / 1e6:6.1f} MB/s)  runs: {' '.join(f'{x:.2f}' for x in d)}")
print(f"skopeo copy   {ms * 1000:8.0f} ms median  ({size / ms / 1e6:6.1f} MB/s)  runs: {' '.join(f'{x:.2f}' for x in s)}")
print(f"decant / skopeo = {md / ms:.2f} (target <= 1.0)")
print(f"re-push of the unchanged image: {sys.argv[4]} requests ({sys.argv[5].rstrip(', ')})")
PY
