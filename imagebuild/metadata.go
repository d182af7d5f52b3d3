package imagebuild

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// debianToIncusArch maps Debian architecture names to the kernel names Incus
// uses in image metadata.
var debianToIncusArch = map[string]string{
	"amd64":    "x86_64",
	"arm64":    "aarch64",
	"i386":     "i686",
	"armhf":    "armv7l",
	"armel":    "armv6l",
	"ppc64el":  "ppc64le",
	"ppc64":    "ppc64",
	"s390x":    "s390x",
	"riscv64":  "riscv64",
	"mips64el": "mips64",
	"loong64":  "loongarch64",
}

// IncusArchitecture returns the Incus name of a Debian architecture; names
// that already are Incus names are returned unchanged.
func IncusArchitecture(debian string) (string, error) {
	if a, ok := debianToIncusArch[debian]; ok {
		return a, nil
	}
	for _, a := range debianToIncusArch {
		if a == debian {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownArchitecture, debian)
}

// templateFile is one entry of metadata.yaml's templates map.
type templateFile struct {
	When       []string          `json:"when"`
	CreateOnly bool              `json:"create_only"`
	Template   string            `json:"template"`
	Properties map[string]string `json:"properties"`
	UID        string            `json:"uid,omitempty"`
	GID        string            `json:"gid,omitempty"`
	Mode       string            `json:"mode,omitempty"`
}

type metadataYAML struct {
	Architecture string                  `json:"architecture"`
	CreationDate int64                   `json:"creation_date"`
	Profiles     []string                `json:"profiles,omitempty"`
	Properties   map[string]string       `json:"properties"`
	Templates    map[string]templateFile `json:"templates,omitempty"`
}

// GeneratorPath is where the image carries incusexec's systemd generator.
const GeneratorPath = "/etc/systemd/system-generators/lxc"

// The templates are pongo2 templates rendered by Incus when an instance is
// created or copied; files without pongo2 syntax come out unchanged.
const (
	hostnameTemplate = "{{ instance.name }}\n"
	hostsTemplate    = `127.0.0.1	localhost
127.0.1.1	{{ instance.name }}

# The following lines are desirable for IPv6 capable hosts
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
`
)

// generatorScript is incusexec's own systemd generator for Debian containers
// under Incus. It runs early at every boot (before units are loaded) and
// only writes into the generator output directory, so the image's files stay
// as the tarball had them. It must contain no pongo2 syntax (no brace
// followed by brace, percent or hash) because Incus renders it as a template.
//
// Every process it starts delays the boot (systemd waits for all generators
// before it loads a unit), and on a loaded machine a fork costs milliseconds:
// it runs a fixed handful of commands (stat, one grep over all unit files,
// one mkdir) whatever the number of units, and does everything else with
// shell builtins. Masks are empty files, which systemd treats like links to
// /dev/null; dependencies are drop-ins rather than .wants links.
const generatorScript = `#!/bin/sh
# incusexec systemd generator for Debian containers under Incus.
# Arguments: normal, early and late output directories (systemd.generator(7)).
# Uses shell builtins wherever it can: each process started here delays boot.
set -eu

in_lxc() {
	[ "${container:-}" = lxc ] && return 0
	case "${SYSTEMD_VIRTUALIZATION:-}" in
	container:lxc) return 0 ;;
	?*) return 1 ;;
	esac
	tr '\0' '\n' </proc/1/environ 2>/dev/null | grep -qx 'container=lxc'
}
in_lxc || exit 0

out="${1:-/run/systemd/generator}"

# A root directory that system users cannot traverse (a tarball made from a
# mktemp directory has mode 0700) breaks every unit that drops privileges.
case "$(stat -c %a / 2>/dev/null)" in
	700|750|710|770) chmod 0755 / ;;
esac

# Under a user namespace the container's root cannot do what some units'
# sandboxing asks of it (private device nodes, kernel tunables, new mount
# propagation on some kernels); those units get a drop-in relaxing it.
# A full identity map is "0 0 4294967295": anything else is a user namespace.
unprivileged=no
if [ -r /proc/self/uid_map ]; then
	read -r inside outside count _ </proc/self/uid_map || true
	if [ "${inside:-}" != 0 ] || [ "${outside:-}" != 0 ] || [ "${count:-}" != 4294967295 ]; then
		unprivileged=yes
	fi
fi
relaxed=
if [ "$unprivileged" = yes ]; then
	# One grep over every unit file (not one per file).
	relaxed=$(grep -lsE '^(PrivateDevices|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectClock|ProtectHostname|ProtectHome|ProtectSystem|ProtectControlGroups|PrivateMounts)=' \
		/etc/systemd/system/*.service /lib/systemd/system/*.service /usr/lib/systemd/system/*.service 2>/dev/null || true)
fi

# All the directories at once, with one mkdir.
dirs="$out $out/systemd-networkd.service.d $out/multi-user.target.d $out/sockets.target.d $out/network-online.target.d"
units=
for unit in $relaxed; do
	unit=${unit##*/}
	case " $units " in *" $unit "*) continue ;; esac
	units="$units $unit"
	dirs="$dirs $out/$unit.d"
done
mkdir -p $dirs

for unit in $units; do
	printf '%s\n' '[Service]' PrivateDevices=no PrivateMounts=no ProtectHome=no \
		ProtectSystem=no ProtectKernelTunables=no ProtectKernelModules=no \
		ProtectKernelLogs=no ProtectControlGroups=no ProtectClock=no \
		ProtectHostname=no ProtectProc=default >"$out/$unit.d/zz-incusexec-container.conf"
done

# Incus mounts /sys read-write in unprivileged containers, and
# systemd-networkd then waits for udev, which does not run in a container
# (it is masked below), to initialise each link, leaving host0 "pending"
# forever. A read-only /sys in networkd's own mount namespace tells it that
# there is no udev. (Generators see a sandboxed file system, so /sys cannot
# be tested from here.)
printf '%s\n' '[Service]' 'ReadOnlyPaths=/sys' >"$out/systemd-networkd.service.d/zz-incusexec-no-udev.conf"

# Units that cannot work inside a container (no udev, no kernel modules, no
# block devices of its own): masking them keeps "systemctl
# is-system-running" meaningful and the boot short. An empty unit file is a
# mask, like a link to /dev/null.
for unit in \
	systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
	systemd-udev-trigger.service systemd-udev-settle.service \
	systemd-journald-audit.socket systemd-modules-load.service modprobe@.service \
	systemd-remount-fs.service \
	sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
	sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount \
	proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
	systemd-binfmt.service systemd-hwdb-update.service \
	systemd-pstore.service systemd-firstboot.service \
	e2scrub_reap.service e2scrub_all.timer \
	getty-static.service serial-getty@.service; do
	: >"$out/$unit"
done

# Network: systemd-networkd configures host0 through Debian's
# 80-container-host0.network (with the image's drop-in asking for IPv4
# only), and boot waits for host0's IPv4 address, so that "running" means
# the address is there. It waits with its own unit, not with
# systemd-networkd-wait-online: that one waits until networkd calls the
# link configured, which includes the IPv6 link-local address's duplicate
# address detection, a second after the DHCPv4 lease (which arrives within
# milliseconds), whether or not the bridge has IPv6. The unit watches the
# kernel's IPv4 routes: the address brings its prefix route, on host0.
unit_exists() {
	[ -e "/lib/systemd/system/$1" ] || [ -e "/usr/lib/systemd/system/$1" ] || [ -e "/etc/systemd/system/$1" ]
}
if unit_exists systemd-networkd.service; then
	printf '%s\n' '[Unit]' \
		'Description=incusexec: wait for an IPv4 address on host0' \
		'Wants=systemd-networkd.service' \
		'After=systemd-networkd.service' \
		'Before=network-online.target' \
		'ConditionPathExists=/sys/class/net/host0' \
		'[Service]' \
		'Type=oneshot' \
		'RemainAfterExit=yes' \
		'ExecStart=/bin/sh -c '"'"'n=0; while [ "$$n" -lt 600 ]; do while read -r dev _; do [ "$$dev" = host0 ] && exit 0; done </proc/net/route; n=$$((n+1)); sleep 0.05; done; echo "host0 has no IPv4 address after 30 s" >&2; exit 1'"'" \
		>"$out/incusexec-host0-ipv4.service"
	printf '%s\n' '[Unit]' 'Wants=systemd-networkd.service incusexec-host0-ipv4.service' >"$out/multi-user.target.d/zz-incusexec-network.conf"
	printf '%s\n' '[Unit]' 'Wants=incusexec-host0-ipv4.service' >"$out/network-online.target.d/zz-incusexec-network.conf"
	if unit_exists systemd-networkd.socket; then
		printf '%s\n' '[Unit]' 'Wants=systemd-networkd.socket' >"$out/sockets.target.d/zz-incusexec-network.conf"
	fi
fi
exit 0
`

// NetworkDropInPath is the systemd-networkd drop-in the image carries for
// Debian's 80-container-host0.network.
const NetworkDropInPath = "/etc/systemd/network/80-container-host0.network.d/zz-incusexec.conf"

// networkDropIn makes host0 count as online (in networkctl and for
// systemd-networkd-wait-online, when a unit pulls that in) once it has its
// IPv4 address, not IPv6 as well, which a bridge without IPv6 gives nothing
// for. It does not spare wait-online the second of IPv6 link-local
// duplicate address detection (networkd calls the link configured only
// after it), which is why the boot waits with the generator's own unit. The
// hostname comes from Incus, so networkd does not try (and fail, in an
// unprivileged container, after starting systemd-hostnamed) to set the one
// the DHCP server sends.
const networkDropIn = `# incusexec: online means IPv4 on host0; Incus sets the host name.
[Link]
RequiredFamilyForOnline=ipv4

[DHCPv4]
UseHostname=no
`

// metadataEntries returns the files of the metadata tarball (metadata.yaml
// and templates/*) for meta.
func metadataEntries(meta Metadata) (map[string][]byte, error) {
	arch, err := IncusArchitecture(meta.Architecture)
	if err != nil {
		return nil, err
	}
	props := map[string]string{}
	maps.Copy(props, meta.Properties)
	set := func(k, v string) {
		if v != "" {
			props[k] = v
		}
	}
	set("description", meta.Description)
	set("os", meta.OS)
	set("release", meta.Release)
	set("architecture", meta.Architecture)
	set("artifact_id", meta.ArtifactID)
	created := meta.Created
	if created.IsZero() {
		created = time.Now()
	}
	m := metadataYAML{
		Architecture: arch,
		CreationDate: created.Unix(),
		Profiles:     meta.Profiles,
		Properties:   props,
	}
	files := map[string][]byte{}
	if !meta.NoTemplates {
		m.Templates = map[string]templateFile{
			"/etc/hostname": {When: []string{"create", "copy"}, Template: "hostname.tpl", Properties: map[string]string{}},
			"/etc/hosts":    {When: []string{"create", "copy"}, Template: "hosts.tpl", Properties: map[string]string{}},
			GeneratorPath: {When: []string{"create", "copy"}, Template: "lxc-generator.tpl", Properties: map[string]string{},
				UID: "0", GID: "0", Mode: "0755"},
			NetworkDropInPath: {When: []string{"create", "copy"}, Template: "host0-network.tpl", Properties: map[string]string{},
				UID: "0", GID: "0", Mode: "0644"},
		}
		files["templates/hostname.tpl"] = []byte(hostnameTemplate)
		files["templates/hosts.tpl"] = []byte(hostsTemplate)
		files["templates/lxc-generator.tpl"] = []byte(generatorScript)
		files["templates/host0-network.tpl"] = []byte(networkDropIn)
	}
	// JSON is YAML: encoding metadata.yaml as JSON quotes every value, so
	// that no string from the host (a description with a newline or a colon)
	// can add or change keys.
	y, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	files["metadata.yaml"] = append(yamlSafe(y), '\n')
	return files, nil
}

// writeMetadata writes the metadata files as tar entries under prefix ("" for
// a split metadata tarball). mtime is the entries' modification time.
func writeMetadata(tw *tar.Writer, files map[string][]byte, mtime time.Time) error {
	dirs := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if d, _, ok := strings.Cut(name, "/"); ok && !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		b := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// MetadataTarball returns the metadata tarball a split import uploads
// beside the root filesystem: metadata.yaml and the templates.
func MetadataTarball(meta Metadata) ([]byte, error) {
	return metadataTarball(meta)
}

func metadataTarball(meta Metadata) ([]byte, error) {
	files, err := metadataEntries(meta)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := meta.Created
	if mtime.IsZero() {
		mtime = time.Now()
	}
	if err := writeMetadata(tw, files, mtime); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// yamlSafe escapes the characters that JSON leaves raw but YAML forbids in
// a document (DEL, the C1 controls, U+FFFE and U+FFFF) as \u escapes, which
// YAML's double-quoted strings decode. They can only occur inside strings.
func yamlSafe(b []byte) []byte {
	var out []byte
	for i, r := range string(b) {
		bad := r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0xfffe || r == 0xffff
		if !bad {
			if out != nil {
				out = utf8.AppendRune(out, r)
			}
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(b)+16), b[:i]...)
		}
		out = fmt.Appendf(out, "\\u%04x", r)
	}
	if out == nil {
		return b
	}
	return out
}
