#!/bin/bash
# Builds a small but real VM disk without mounting anything and without root:
#   OUT/rootfs/          a busybox-based Linux root (os-release, fstab, passwd, a file capability,
#                        a hole-filled lastlog, a kernel and initrd in /boot)
#   OUT/root.ext4        the root filesystem alone (a "partition dump", as `dd` of /dev/sda2 gives)
#   OUT/boot.ext4        the /boot filesystem
#   OUT/disk.raw         a GPT disk: 1 = /boot (LABEL=boot), 2 = root, 3 = swap
#   OUT/disk.qcow2       the same disk as a compressed QCOW2, as KVM/QEMU leaves it
# Tools: mkfs.ext4 (e2fsprogs), busybox (busybox-static), sfdisk (fdisk), mkswap, qemu-img,
# setcap (libcap2-bin, optional: without it, or when the kernel refuses it to a user without
# CAP_SETFCAP, the capability is left out and said so). Everything else works as any user; run
# by a user, the image's files are owned by that user's uid (mkfs.ext4 -d copies the staged
# owners, and -E root_owner sets only the root directory's).
set -euo pipefail
OUT=${1:?usage: make-example.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
for tool in mkfs.ext4 sfdisk mkswap qemu-img; do
  command -v "$tool" >/dev/null || { echo "make-example.sh: $tool is missing (see .ci/run for the packages)" >&2; exit 1; }
done
BUSYBOX=$(command -v busybox || true)
[ -x /bin/busybox ] && BUSYBOX=/bin/busybox
[ -n "$BUSYBOX" ] || { echo "make-example.sh: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

ROOT_UUID=5f3d0c1e-7a42-4e55-9d1b-0c0ffee00001
BOOT_UUID=5f3d0c1e-7a42-4e55-9d1b-0c0ffee00002
rm -rf "$OUT/rootfs" "$OUT/bootfs"
R="$OUT/rootfs"
mkdir -p "$R"/{bin,sbin,etc,root,home/alice,proc,sys,dev,run,tmp,var/log,var/tmp,usr/bin,usr/sbin,boot,lib/modules/6.1.0-example,srv/www}
cp "$BUSYBOX" "$R/bin/busybox"
for a in sh ash ls cat echo sleep ps mkdir rm cp mv ln grep sed wc id hostname env true false kill; do
  ln -s busybox "$R/bin/$a"
done
ln -s ../../bin/busybox "$R/usr/sbin/httpd"
ln -s ../bin/busybox "$R/sbin/init"
cat > "$R/etc/os-release" <<'OS'
PRETTY_NAME="decant example (busybox)"
NAME="decant-example"
ID=decant-example
VERSION_ID="1.0"
OS
cat > "$R/etc/fstab" <<FSTAB
# <file system>  <mount point>  <type>  <options>  <dump>  <pass>
UUID=$ROOT_UUID  /         ext4   errors=remount-ro  0  1
LABEL=boot       /boot     ext4   defaults           0  2
/dev/sda3        none      swap   sw                 0  0
proc             /proc     proc   defaults           0  0
tmpfs            /tmp      tmpfs  defaults           0  0
FSTAB
printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\nalice:x:1000:\n' > "$R/etc/group"
echo example > "$R/etc/hostname"
echo '<h1>hello from a VM</h1>' > "$R/srv/www/index.html"
echo "alice's notes" > "$R/home/alice/notes.txt"
chmod 0700 "$R/root"
chmod 1777 "$R/tmp" "$R/var/tmp"
echo 'Nov 22 07:00:00 example kernel: booted' > "$R/var/log/syslog"
# A VM that once saw a large UID: lastlog is mostly holes (apparent 2 GiB).
truncate -s 2G "$R/var/log/lastlog"
printf 'stale' > "$R/run/stale.pid"
printf 'scratch' > "$R/tmp/scratch"
printf 'module' > "$R/lib/modules/6.1.0-example/dummy.ko"
# ping needs CAP_NET_RAW as a file capability: the old tar recipe loses it.
cp "$BUSYBOX" "$R/bin/ping"
if ! command -v setcap >/dev/null; then
  echo "make-example.sh: setcap not found; /bin/ping has no file capability" >&2
elif ! setcap cap_net_raw+ep "$R/bin/ping" 2>/dev/null; then
  echo "make-example.sh: setcap was refused (setting a file capability needs root); /bin/ping has no file capability" >&2
fi
ln "$R/bin/ping" "$R/bin/ping6"

B="$OUT/bootfs"
mkdir -p "$B/grub"
head -c 1048576 /dev/urandom > "$B/vmlinuz-6.1.0-example"
head -c 524288 /dev/urandom > "$B/initrd.img-6.1.0-example"
echo 'set default=0' > "$B/grub/grub.cfg"

rm -f "$OUT/root.ext4" "$OUT/boot.ext4"
mkfs.ext4 -q -F -d "$R" -E root_owner=0:0 -U "$ROOT_UUID" -L root "$OUT/root.ext4" 48M >/dev/null
mkfs.ext4 -q -F -d "$B" -E root_owner=0:0 -U "$BOOT_UUID" -L boot "$OUT/boot.ext4" 16M >/dev/null

# GPT: 1 MiB alignment; p1 boot 16 MiB, p2 root 48 MiB, p3 swap 4 MiB.
rm -f "$OUT/disk.raw"
truncate -s 72M "$OUT/disk.raw"
sfdisk -q "$OUT/disk.raw" <<'PT'
label: gpt
start=2048, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"
start=34816, size=98304, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
start=133120, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap"
PT
dd if="$OUT/boot.ext4" of="$OUT/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$OUT/root.ext4" of="$OUT/disk.raw" bs=1M seek=17 conv=notrunc,sparse status=none
truncate -s 4M "$OUT/swap.img"; mkswap -q "$OUT/swap.img" >/dev/null
dd if="$OUT/swap.img" of="$OUT/disk.raw" bs=1M seek=65 conv=notrunc status=none
rm -f "$OUT/swap.img" "$OUT/disk.qcow2"
qemu-img convert -c -O qcow2 "$OUT/disk.raw" "$OUT/disk.qcow2"
echo "example disk: $OUT/disk.qcow2 (partition dump: $OUT/root.ext4)"
