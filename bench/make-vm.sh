#!/bin/bash
# Builds the benchmark VM: a real Debian bookworm (debootstrap minbase + openssh-server, cron,
# rsyslog, nginx-light, a kernel in /boot), as
#   WORK/rootfs.ext4   the root filesystem alone (a partition dump), via mkfs.ext4 -d
#   WORK/disk.raw      GPT: 1 = /boot (ext4, LABEL=boot), 2 = root (ext4), fstab names both
#   WORK/disk.{qcow2,zlib.qcow2,vdi,vmdk,stream.vmdk}   the same disk via qemu-img
# Needs root (debootstrap, chroot). Cached: rerun only rebuilds what is missing.
set -euo pipefail
WORK=${1:-bench/work}
mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd)
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
R="$WORK/rootfs"
ROOT_UUID=0b9e2f6a-1111-4222-8333-444455556666
BOOT_UUID=0b9e2f6a-1111-4222-8333-777788889999

if [ ! -e "$WORK/.rootfs-done" ]; then
  rm -rf "$R"
  debootstrap --variant=minbase bookworm "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  for m in proc sys dev dev/pts; do mount --bind "/$m" "$R/$m"; done
  trap 'for m in dev/pts dev sys proc; do umount -l "$R/$m" 2>/dev/null || true; done' EXIT
  chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold --no-install-recommends systemd-sysv cron openssh-server rsyslog nginx-light \
      linux-image-amd64 iputils-ping >"$WORK/apt.log" 2>&1
  chroot "$R" systemctl enable ssh cron rsyslog nginx >/dev/null 2>&1 || true
  for m in dev/pts dev sys proc; do umount -l "$R/$m"; done
  trap - EXIT
  rm -f "$R/usr/sbin/policy-rc.d"
  chroot "$R" apt-get clean
  cat > "$R/etc/fstab" <<FSTAB
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
LABEL=boot /boot ext4 defaults 0 2
proc /proc proc defaults 0 0
FSTAB
  echo decant-bench > "$R/etc/hostname"
  touch "$WORK/.rootfs-done"
fi

if [ ! -e "$WORK/rootfs.ext4" ] || [ ! -e "$WORK/boot.ext4" ]; then
  rm -rf "$WORK/bootfs"; mkdir -p "$WORK/bootfs"
  cp -a "$R/boot/." "$WORK/bootfs/"
  mkfs.ext4 -q -F -d "$WORK/bootfs" -E root_owner=0:0 -U "$BOOT_UUID" -L boot "$WORK/boot.ext4" 160M >/dev/null
  # The root's /boot is the mountpoint: keep it empty in the root filesystem, as on the VM.
  mv "$R/boot" "$WORK/stage-boot-saved"; mkdir "$R/boot"
  mkfs.ext4 -q -F -d "$R" -E root_owner=0:0 -U "$ROOT_UUID" -L root "$WORK/rootfs.ext4" 1400M >/dev/null
  rmdir "$R/boot"; mv "$WORK/stage-boot-saved" "$R/boot"
fi
# EXT4_ONLY=1: the filesystems are enough (tests/init.rs imports rootfs.ext4); skip the disks.
[ "${EXT4_ONLY:-}" = 1 ] && exit 0

if [ ! -e "$WORK/disk.raw" ]; then
  truncate -s 1600M "$WORK/disk.raw"
  sfdisk -q "$WORK/disk.raw" <<'PT'
label: gpt
start=2048, size=327680, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"
start=329728, size=2867200, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
PT
  dd if="$WORK/boot.ext4" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$WORK/rootfs.ext4" of="$WORK/disk.raw" bs=1M seek=161 conv=notrunc,sparse status=none
fi
[ -e "$WORK/disk.qcow2" ] || qemu-img convert -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"
[ -e "$WORK/disk.zlib.qcow2" ] || qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$WORK/disk.zlib.qcow2"
[ -e "$WORK/disk.vdi" ] || qemu-img convert -O vdi "$WORK/disk.raw" "$WORK/disk.vdi"
[ -e "$WORK/disk.vmdk" ] || qemu-img convert -O vmdk "$WORK/disk.raw" "$WORK/disk.vmdk"
[ -e "$WORK/disk.stream.vmdk" ] || qemu-img convert -O vmdk -o subformat=streamOptimized "$WORK/disk.raw" "$WORK/disk.stream.vmdk"
du -sh "$R" | sed 's/^/rootfs: /'
ls -ls "$WORK"/*.ext4 "$WORK"/disk.*
