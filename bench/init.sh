#!/bin/bash
# decant-init against the inits it replaces, in the same run, each as PID 1 of its own pid
# namespace with the same N `sleep` services (default 21; also run with 2):
#   decant-init   (runit dirs, services mode; static binary, PROFILE below)
#   supervisord   (one [program:] per service; Debian's supervisor package)
#   runsvdir      (+ one runsv per service; Debian's runit package)
#   tini          (supervises nothing: a shell starts the sleeps; its RSS is the floor)
# Prints, per init: VmRSS of the init's own processes (sum; the sleeps are not counted),
# of which RssAnon, the time from exec to all N sleeps running and the time from SIGTERM to
# PID 1's exit (medians of RUNS; KILL after 5 s).
# Not a CI gate. Needs root (pid namespaces) and the packages above.
#   bench/init.sh [N] [RUNS]     PROFILE=init|release (default init: panic=abort, opt-level=s)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-21}
RUNS=${2:-5}
PROFILE=${PROFILE:-init}
[ "$(id -u)" = 0 ] || { echo "bench/init.sh: run as root" >&2; exit 1; }
for t in supervisord runsvdir runsv tini unshare busybox; do
  command -v $t >/dev/null || { echo "bench/init.sh: $t is missing (apt-get install supervisor runit tini busybox-static)" >&2; exit 1; }
done
TD=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --profile "$PROFILE" -p supervisor \
  --bin decant-init --target x86_64-unknown-linux-gnu
INIT=$TD/x86_64-unknown-linux-gnu/$PROFILE/decant-init
W=$(mktemp -d /var/tmp/decant-init-bench.XXXX)
trap 'rm -rf "$W"' EXIT
MARK=$((86000 + RANDOM % 1000))   # `sleep $MARK`: what counts as a running service

# The same N services in each init's own format.
mkdir -p "$W/root/etc/service" "$W/runit"
printf '[supervisord]\nnodaemon=true\nlogfile=/dev/null\npidfile=%s/sv.pid\n[unix_http_server]\nfile=%s/sv.sock\n' "$W" "$W" > "$W/supervisord.conf"
for i in $(seq -w 1 "$N"); do
  for d in "$W/root/etc/service/s$i" "$W/runit/s$i"; do
    mkdir -p "$d"; printf '#!/bin/sh\nexec sleep %s\n' "$MARK" > "$d/run"; chmod +x "$d/run"
  done
  printf '[program:s%s]\ncommand=sleep %s\nstartsecs=0\nstdout_logfile=/dev/null\nstderr_logfile=/dev/null\n' "$i" "$MARK" >> "$W/supervisord.conf"
done
SH_SLEEPS="for i in \$(seq $N); do sleep $MARK & done; wait"

# pids of processes in the namespace under unshare pid $1 whose comm matches $2 (a regex).
procs() { # root comm-regex
  local p
  for p in $(ps -e -o pid=,comm= | awk -v r="$2" '$2 ~ "^(" r ")$" {print $1}'); do
    # Only this run's: its pid namespace is the one of the unshare's child.
    [ "$(readlink /proc/$p/ns/pid 2>/dev/null)" = "$1" ] && echo "$p"
  done
}
sleeps() { pgrep -c -x -f "sleep $MARK" || true; }

measure() { # name comm-regex command...
  local name=$1 comm=$2; shift 2
  local times=() downs=() rss=0 anon=0
  for run in $(seq "$RUNS"); do
    local t0 t1 u
    t0=$(date +%s%N)
    unshare --pid --fork --kill-child=SIGKILL --mount-proc "$@" >/dev/null 2>&1 &
    u=$!
    until [ "$(sleeps)" -ge "$N" ]; do sleep 0.002; done
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000 )))
    local child
    child=$(pgrep -P "$u" | head -1)
    if [ "$run" = "$RUNS" ]; then
      sleep 1   # settle (supervisord's startsecs bookkeeping, lazy page faults)
      local ns
      ns=$(readlink /proc/$child/ns/pid)
      rss=0; anon=0
      for p in $(procs "$ns" "$comm"); do
        rss=$((rss + $(awk '/^VmRSS:/ {print $2}' /proc/$p/status)))
        anon=$((anon + $(awk '/^RssAnon:/ {print $2}' /proc/$p/status)))
      done
    fi
    # unshare --fork ignores SIGTERM: the namespace's PID 1 gets it, then KILL after 5 s.
    local t2 t3
    t2=$(date +%s%N)
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 1000); do kill -0 "$child" 2>/dev/null || break; sleep 0.005; done
    t3=$(date +%s%N)
    downs+=($(( (t3 - t2) / 1000 )))
    kill -KILL "$child" 2>/dev/null || true
    wait "$u" 2>/dev/null || true
    while [ "$(sleeps)" -gt 0 ]; do sleep 0.01; done
  done
  local med down
  med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  down=$(printf '%s\n' "${downs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-22s %9.2f %9.2f %12.1f %12.1f\n' "$name" "$(echo "$rss/1024" | bc -l)" "$(echo "$anon/1024" | bc -l)" "$(echo "$med/1000" | bc -l)" "$(echo "$down/1000" | bc -l)"
}

echo "$N sleep services, median of $RUNS starts; decant-init profile: $PROFILE ($(stat -c %s "$INIT") bytes)"
printf '%-22s %9s %9s %12s %12s\n' init RSS_MB anon_MB all_up_ms down_ms
measure decant-init decant-init "$INIT" --root "$W/root" --socket "$W/ctl.sock"
measure "supervisord" supervisord supervisord -c "$W/supervisord.conf"
measure "runsvdir + runsv" 'runsvdir|runsv' runsvdir -P "$W/runit"
measure "tini (+ sh)" 'tini|sh' tini -s -- sh -c "$SH_SLEEPS"
