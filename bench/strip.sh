#!/bin/bash
# Strips the bench Debian VM (bench/make-vm.sh: debootstrap bookworm with sshd, cron, rsyslog,
# nginx) imported with the release binary, with probes that need no init: nginx answers
# HTTP 200 on 127.0.0.1:80 inside the container, sshd (host keys generated first, as a first
# boot does) sends its SSH banner, cron stays up in the foreground, rsyslogd's config checks.
# Prints compressed size before and after, the ratio, rounds, candidates probed and the time.
# TRACE=1 adds --trace: the probes' file accesses (fanotify) propose untouched packages and
# directories on top of the rules, each verified by the probes.
# Root (containers). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/strip.sh: run as root" >&2; exit 1; }
DISK=${DISK:-/var/tmp/decant-bench/disk.qcow2}
[ -f "$DISK" ] || { echo "bench/strip.sh: $DISK missing (bench/make-vm.sh makes it)" >&2; exit 1; }
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/decant
W=$(mktemp -d /var/tmp/decant-stripbench.XXXX); trap 'rm -rf "$W"' EXIT
export DECANT_ROOT=$W/store
"$BIN" import -q -t deb "$DISK" >/dev/null
"$BIN" size deb

HTTP='bash -c "nginx && sleep 0.5 && exec 3<>/dev/tcp/127.0.0.1/80 && printf \"GET / HTTP/1.0\r\n\r\n\" >&3 && head -1 <&3 | grep -q \" 200 \""'
SSH='bash -c "mkdir -p /run/sshd && ssh-keygen -A && /usr/sbin/sshd && sleep 0.5 && exec 4<>/dev/tcp/127.0.0.1/22 && head -c 8 <&4 | grep -q SSH-2.0"'
CRON='bash -c "cron -f & p=\$!; sleep 1; kill -0 \$p"'
SYSLOG='rsyslogd -N1'
# VM leftovers (kernel, initramfs, udev, systemd as init: decant-init replaces it), apt and
# its keyring (the slim image is not meant to install more), and libraries they leave orphaned.
PKGS="udev systemd linux-image-amd64 linux-image-6.1.0-50-amd64 initramfs-tools klibc-utils
  kmod dmsetup libcryptsetup12 libsystemd-shared apt e2fsprogs iputils-ping tzdata
  libgnutls30 libapt-pkg6.0 gpgv debian-archive-keyring libfdisk1 libext2fs2 cpio libseccomp2
  libkmod2 libklibc libapparmor1 libjson-c5 libss2 libip4tc2 libargon2-1 libstdc++6 libp11-kit0
  libhogweed6 libidn2-0 libtasn1-6 libxxhash0 logsave linux-base libnettle8 libunistring2 libgmp10"
ARGS=()
for p in $PKGS; do ARGS+=(--remove-package "$p"); done
# Character-set converters beyond UTF-8 (iconv for legacy charsets): none of the services use them.
ARGS+=(--remove /usr/lib/x86_64-linux-gnu/gconv --keep '/usr/lib/x86_64-linux-gnu/gconv/gconv-modules*')
[ "${TRACE:-0}" = 1 ] && ARGS+=(--trace)
start=$(date +%s.%N)
"$BIN" strip deb --tag deb:slim --profile vm "${ARGS[@]}" --cascade --force \
  --probe "$HTTP" --probe "$SSH" --probe "$CRON" --probe "$SYSLOG" --probe-timeout 30 \
  --format json > "$W/report.json"
end=$(date +%s.%N)
python3 - "$W/report.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
took = float(sys.argv[3]) - float(sys.argv[2])
mib = lambda n: n / 1048576
print(f"compressed   {mib(r['compressed_before']):7.1f} MiB -> {mib(r['compressed_after']):6.1f} MiB  ({r['compressed_before'] / r['compressed_after']:.2f}x smaller, target >= 3x)")
print(f"uncompressed {mib(r['bytes_before']):7.1f} MiB -> {mib(r['bytes_after']):6.1f} MiB  ({r['bytes_before'] / r['bytes_after']:.2f}x)")
# The final image is the last candidate that passed every probe (bisection only accepts on a pass).
print(f"rounds {len(r['rounds'])}, candidates probed {len(r['trials'])} ({sum(t['passed'] for t in r['trials'])} passed)")
print(f"packages removed: {len(r['removed_packages'])}; kept because a probe needed them: {len(r['kept'])}")
for g, why in r['kept']:
    print(f"  kept {g}: {why}")
print(f"time {took:.0f} s")
PY
# The stripped image, checked once more outside the loop.
"$BIN" run --rm deb:slim sh -c "$HTTP && $SYSLOG >/dev/null 2>&1" && echo "deb:slim: nginx answers 200, rsyslog config valid"
