#!/bin/sh
# incusexec systemd generator for Debian containers under Incus.
# Arguments: normal, early and late output directories (systemd.generator(7)).
set -eu

in_lxc() {
	[ "${container:-}" = lxc ] && return 0
	case "${SYSTEMD_VIRTUALIZATION:-}" in container:lxc) return 0 ;; esac
	tr '\0' '\n' </proc/1/environ 2>/dev/null | grep -qx 'container=lxc'
}
in_lxc || exit 0

out="${1:-/run/systemd/generator}"
mkdir -p "$out"

# A root directory that system users cannot traverse (a tarball made from a
# mktemp directory has mode 0700) breaks every unit that drops privileges.
case "$(stat -c %a / 2>/dev/null)" in
	700|750|710|770) chmod 0755 / ;;
esac

# Incus mounts /sys read-write in unprivileged containers, and
# systemd-networkd then waits for udev, which does not run in a container
# (it is masked below), to initialise each link, leaving host0 "pending"
# forever. A read-only /sys in networkd's own mount namespace tells it that
# there is no udev. (Generators see a sandboxed file system, so /sys cannot
# be tested from here.)
mkdir -p "$out/systemd-networkd.service.d"
cat >"$out/systemd-networkd.service.d/zz-incusexec-no-udev.conf" <<'UNIT'
[Service]
ReadOnlyPaths=/sys
UNIT

# Under a user namespace the container's root cannot do what some units'
# sandboxing asks of it (private device nodes, kernel tunables, new mount
# propagation on some kernels); relax those settings instead of failing.
unprivileged=no
if [ -r /proc/self/uid_map ]; then
	# A full identity map is "0 0 4294967295": anything else is a user namespace.
	set -- $(cat /proc/self/uid_map)
	if [ "${1:-}" != 0 ] || [ "${2:-}" != 0 ] || [ "${3:-}" != 4294967295 ]; then
		unprivileged=yes
	fi
fi

relax() {
	mkdir -p "$out/$1.d"
	cat >"$out/$1.d/zz-incusexec-container.conf" <<'UNIT'
[Service]
PrivateDevices=no
PrivateMounts=no
ProtectHome=no
ProtectSystem=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
ProtectProc=default
UNIT
}

if [ "$unprivileged" = yes ]; then
	for dir in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
		[ -d "$dir" ] || continue
		for unit in "$dir"/*.service; do
			[ -e "$unit" ] || continue
			if grep -Eq '^(PrivateDevices|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectClock|ProtectHostname|ProtectHome|ProtectSystem|ProtectControlGroups|PrivateMounts)=' "$unit"; then
				relax "$(basename "$unit")"
			fi
		done
	done
fi

# Units that cannot work inside a container: masking them keeps
# "systemctl is-system-running" meaningful.
for unit in \
	systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
	systemd-udev-trigger.service systemd-udev-settle.service \
	systemd-journald-audit.socket systemd-modules-load.service \
	systemd-remount-fs.service \
	sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
	sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount \
	proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
	systemd-binfmt.service systemd-hwdb-update.service \
	systemd-pstore.service systemd-firstboot.service \
	getty-static.service serial-getty@.service; do
	ln -sf /dev/null "$out/$unit"
done

# Network: systemd-networkd configures host0 through Debian's
# 80-container-host0.network, and boot waits for it to be online, so that
# "running" means the network is up.
wants() {
	mkdir -p "$out/$1.wants"
	for lib in /lib/systemd/system /usr/lib/systemd/system; do
		if [ -e "$lib/$2" ]; then
			ln -sf "$lib/$2" "$out/$1.wants/$2"
			return 0
		fi
	done
}
wants multi-user.target systemd-networkd.service
wants sockets.target systemd-networkd.socket
wants network-online.target systemd-networkd-wait-online.service
wants multi-user.target network-online.target
exit 0
