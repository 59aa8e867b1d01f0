#!/usr/bin/env bash
# Builds the "fresh droplet" image for test/e2e/setup-droplet.test.ts: Debian 12 booted by systemd
# (debootstrap with systemd, dbus, ufw), run without --privileged (refused here: CAP_SYS_RESOURCE is not in the host's
# capability bounding set; SYS_ADMIN, NET_ADMIN and no seccomp are enough for systemd). Docker itself is
# not installed: the test gives the container the host's Docker socket, docker CLI and compose
# plugin, so the stand-ins below play the part of the docker.io package:
#   - docker.service, a oneshot that waits until the host's engine answers through the socket
#     (the stack unit Requires= it, as on a droplet);
#   - a `docker` group with the gid of the host's socket, so membership grants access to it.
# Idempotent and cached like provision.sh: the image carries a key of everything that went into
# it, and a warm run only checks that key. Prints the image name on stdout. Run containers of it
# with --stop-signal SIGRTMIN+3 (systemd's orderly shutdown; Docker 20.10's import cannot set it).
#
# Environment: TTG_DROPLET_IMAGE (default ttg-droplet:bookworm), TTG_DEBIAN_MIRROR, TTG_E2E_CACHE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../bed/lib.sh"

IMAGE="${TTG_DROPLET_IMAGE:-ttg-droplet:bookworm}"
# What DigitalOcean's Debian image has anyway (ca-certificates, openssl, procps, iproute2, an SSH
# server and client), plus systemd to boot and ufw, git and logrotate, so the test does not wait
# for them to download. setup-droplet still runs apt-get for them: installing what is installed is
# quick. The SSH server also plays the application's git host (git@localhost:...) in the test.
PACKAGES=systemd,systemd-sysv,dbus,ufw,ca-certificates,openssl,git,logrotate,procps,iproute2,util-linux,openssh-server
SOCKET=/var/run/docker.sock

debian_mirror() {
  local uri
  if [[ -n "${TTG_DEBIAN_MIRROR:-}" ]]; then echo "$TTG_DEBIAN_MIRROR"; return; fi
  uri="$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n "$uri" ]] || uri="$(awk '/^deb / && $0 ~ /\/debian\/? / {for (i=2;i<=NF;i++) if ($i ~ /^http/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$uri" ]] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set TTG_DEBIAN_MIRROR"
  echo "${uri%/}"
}

docker_unit() {
  cat <<'EOF'
# Stand-in for docker.io's docker.service inside the e2e droplet container: the engine is the test
# bed's, reached through the host's socket mounted at /var/run/docker.sock.
[Unit]
Description=Docker Application Container Engine (e2e stand-in: the host's engine)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for i in $(seq 1 120); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; echo "the host Docker engine does not answer on /var/run/docker.sock" >&2; exit 1'
TimeoutStartSec=90

[Install]
WantedBy=multi-user.target
EOF
}

[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap, docker import)"
[[ -S "$SOCKET" ]] || die "$SOCKET is not a socket: provision the bed first (test/e2e/bed/provision.sh)"
gid="$(stat -c %g "$SOCKET")"
key="$( { echo "bookworm $PACKAGES gid=$gid pam_loginuid=optional"; docker_unit; } | sha256sum | cut -c1-12)"
if [[ "$(docker image inspect -f '{{index .Config.Labels "ttg.droplet.key"}}' "$IMAGE" 2>/dev/null)" == "$key" ]]; then
  log "droplet image $IMAGE present"
  echo "$IMAGE"
  exit 0
fi

mkdir -p "$TTG_E2E_CACHE"
tarball="$TTG_E2E_CACHE/rootfs-droplet-$key.tar"
if [[ ! -s "$tarball" ]]; then
  rootfs="$TTG_E2E_CACHE/droplet-rootfs.tmp"
  rm -rf "$rootfs"
  mirror="$(debian_mirror)"
  log "debootstrap bookworm with systemd from $mirror (about a minute)"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$mirror" \
    >"$TTG_E2E_CACHE/droplet-debootstrap.log" 2>&1 \
    || { tail -n 20 "$TTG_E2E_CACHE/droplet-debootstrap.log" >&2; die "debootstrap failed (see $TTG_E2E_CACHE/droplet-debootstrap.log)"; }
  docker_unit >"$rootfs/etc/systemd/system/docker.service"
  ln -sf /etc/systemd/system/docker.service "$rootfs/etc/systemd/system/multi-user.target.wants/docker.service"
  # -o: the host's docker gid may already name another group in this image (it is only a number).
  chroot "$rootfs" groupadd --system -o --gid "$gid" docker
  # A container may not set the audit login uid (no CAP_AUDIT_CONTROL): with pam_loginuid
  # required, every SSH session would be refused.
  sed -i 's/^session\s\+required\s\+pam_loginuid\.so/session optional pam_loginuid.so/' "$rootfs/etc/pam.d/sshd"
  # A container has no consoles to log in on; their failing gettys would make the system "degraded".
  ln -sf /dev/null "$rootfs/etc/systemd/system/getty@tty1.service"
  ln -sf /dev/null "$rootfs/etc/systemd/system/console-getty.service"
  echo ttg-droplet >"$rootfs/etc/hostname"
  : >"$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
  rm -rf "$rootfs"
fi
log "importing $tarball as $IMAGE"
docker import \
  -c 'ENV container=docker' \
  -c 'CMD ["/sbin/init"]' \
  -c "LABEL ttg.droplet.key=$key" \
  "$tarball" "$IMAGE" >/dev/null || die "docker import of $tarball failed"
echo "$IMAGE"
