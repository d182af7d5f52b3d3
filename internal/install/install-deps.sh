#!/usr/bin/env bash
# install-deps.sh installs what incusexec's tests and demo need on a Debian or
# Ubuntu machine, as root: Incus 6.0 LTS and the tools the test harness uses to
# build images. It is idempotent and quiet when everything is present.
#
# Incus comes from the distribution when it carries it, otherwise from the
# distribution's backports suite. The backports source is derived from the
# machine's own Debian source (same URIs and keyring, suite "<codename>-backports"),
# so no mirror host name is written here.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# For tests: APT_ETC and OS_RELEASE point at other files, and
# --print-backports-source prints the derived source and exits.
APT_ETC=${APT_ETC:-/etc/apt}
OS_RELEASE=${OS_RELEASE:-/etc/os-release}

# derive_backports prints an apt source for "<codename>-backports" built from
# the first existing source that serves "<codename>": its URIs, components and
# keyring (deb822 .sources), or its options and URI (one-line .list).
derive_backports() {
  local codename=$1 f
  for f in "$APT_ETC"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    case "$f" in */incusexec-backports.sources) continue ;; esac
    awk -v want="$codename" -v suite="$codename-backports" '
      BEGIN { RS=""; FS="\n" }
      {
        uris=""; suites=""; comps=""; signed=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)       { uris=$i }
          if ($i ~ /^Suites:/)     { suites=$i }
          if ($i ~ /^Components:/) { comps=$i }
          if ($i ~ /^Signed-By:/)  { signed=$i }
        }
        n = split(suites, s, /[ \t]+/)
        for (j = 2; j <= n; j++) if (s[j] == want) {
          print "Types: deb"; print uris; print "Suites: " suite; print comps
          if (signed != "") print signed
          found = 1; exit
        }
      }
      END { exit found ? 0 : 1 }' "$f" && return 0
  done
  for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    case "$f" in */incusexec-backports.list) continue ;; esac
    awk -v want="$codename" -v suite="$codename-backports" '
      $1 == "deb" {
        opts = ""; i = 2
        if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts $i " "; i++ } opts = opts $i " "; i++ }
        if ($(i+1) == want) {
          printf "deb %s%s %s", opts, $i, suite
          for (k = i + 2; k <= NF; k++) printf " %s", $k
          printf "\n"; found = 1; exit
        }
      }
      END { exit found ? 0 : 1 }' "$f" && return 0
  done
  return 1
}

codename_of_host() { ( . "$OS_RELEASE"; printf '%s' "${VERSION_CODENAME:-}" ); }

if [ "${1:-}" = "--print-backports-source" ]; then
  c=$(codename_of_host)
  [ -n "$c" ] || die "cannot tell the distribution's codename from $OS_RELEASE"
  derive_backports "$c" || die "no apt source for suite '$c' found to derive '$c-backports' from"
  exit 0
fi

# Each required command and the package that provides it.
declare -A wanted=(
  [incusd]="incus-base"
  [incus]="incus-client"
  [busybox]="busybox-static"
  [mkfs.btrfs]="btrfs-progs"
  [debootstrap]="debootstrap"
  [xz]="xz-utils"
  [zstd]="zstd"
  [qemu-img]="qemu-utils"
  [dnsmasq]="dnsmasq-base"
  [nft]="nftables"
  [ip]="iproute2"
)

have() {
  case "$1" in
    incusd) [ -x /usr/libexec/incus/incusd ] || command -v incusd >/dev/null 2>&1 ;;
    busybox) [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && \
             ! ldd /bin/busybox >/dev/null 2>&1 ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for cmd in "${!wanted[@]}"; do
  have "$cmd" || missing+=("${wanted[$cmd]}")
done

# Debian's build and test tools, which the autopkgtest virt-server tests drive
# for real (issue 16). Bookworm's own versions are too old (autopkgtest 5.28
# lacks what Debusine passes; sbuild 0.85 has no --autopkgtest-virt-server
# program lookup), so they come from backports when older than these.
declare -A wanted_min=(
  [autopkgtest]="5.49~"
  [sbuild]="0.89~"
)
pkg_older() { # pkg_older PKG MIN: true when PKG is absent or older than MIN
  local v
  v=$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}')
  [ -z "$v" ] || dpkg --compare-versions "$v" lt "$2"
}
backports_missing=()
for pkg in "${!wanted_min[@]}"; do
  pkg_older "$pkg" "${wanted_min[$pkg]}" && backports_missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ] && [ "${#backports_missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  die "missing packages: ${missing[*]} ${backports_missing[*]}; run this as root (sudo make test) to install them"
fi
command -v apt-get >/dev/null 2>&1 || die "missing packages: ${missing[*]}; only Debian/Ubuntu (apt) is supported"

export DEBIAN_FRONTEND=noninteractive
apt_quiet() { apt-get -qq -o Dpkg::Use-Pty=0 "$@" >/dev/null; }

[ "${#missing[@]}" -eq 0 ] || log "installing: ${missing[*]}"
apt_quiet update

# Does the configured archive carry Incus 6.0 LTS already?
incus_candidate() { apt-cache policy incus-base 2>/dev/null | awk '/Candidate:/ {print $2}'; }
cand=$(incus_candidate)
if [[ " ${missing[*]} " == *" incus-"* ]] && { [ -z "$cand" ] || [ "$cand" = "(none)" ]; }; then
  codename=$(codename_of_host)
  [ -n "$codename" ] || die "cannot tell the distribution's codename from $OS_RELEASE"
  derived=$(derive_backports "$codename") || die "no apt source for suite '$codename' found to derive '$codename-backports' from"
  if printf '%s\n' "$derived" | head -1 | grep -q '^deb '; then
    target=$APT_ETC/sources.list.d/incusexec-backports.list
  else
    target=$APT_ETC/sources.list.d/incusexec-backports.sources
  fi
  printf '%s\n' "$derived" >"$target"
  log "added $target (derived from the existing $codename source)"
  apt_quiet update
  cand=$(incus_candidate)
  [ -n "$cand" ] && [ "$cand" != "(none)" ] || die "incus-base is not available from $codename or $codename-backports"
fi

# Incus (and what it depends on) from backports when that is where it is.
release=()
if apt-cache policy incus-base 2>/dev/null | grep -q -- "-backports"; then
  . "$OS_RELEASE"
  apt-cache policy incus-base | grep -q "${VERSION_CODENAME}/main\|${VERSION_CODENAME} " ||
    release=(-t "${VERSION_CODENAME}-backports")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_quiet install -y --no-install-recommends "${release[@]}" "${missing[@]}"
fi

if [ "${#backports_missing[@]}" -gt 0 ]; then
  codename=$(codename_of_host)
  bp=()
  # (not grep -q: under pipefail, apt-cache's SIGPIPE would fail the test)
  has_bp() { apt-cache policy "${backports_missing[@]}" 2>/dev/null | grep -- "$codename-backports" >/dev/null; }
  if ! has_bp && [ -n "$codename" ] && derived=$(derive_backports "$codename"); then
    if printf '%s\n' "$derived" | head -1 | grep -q '^deb '; then
      target=$APT_ETC/sources.list.d/incusexec-backports.list
    else
      target=$APT_ETC/sources.list.d/incusexec-backports.sources
    fi
    if [ ! -e "$target" ]; then
      printf '%s\n' "$derived" >"$target"
      log "added $target (derived from the existing $codename source)"
      apt_quiet update
    fi
  fi
  if has_bp; then
    bp=(-t "$codename-backports")
  fi
  log "installing: ${backports_missing[*]} ${bp[*]}"
  apt_quiet -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${bp[@]}" "${backports_missing[@]}"
  for pkg in "${!wanted_min[@]}"; do
    ! pkg_older "$pkg" "${wanted_min[$pkg]}" || die "package $pkg is older than ${wanted_min[$pkg]} after install"
  done
fi

for cmd in "${!wanted[@]}"; do
  have "$cmd" || die "'$cmd' (package ${wanted[$cmd]}) is still missing after install"
done
log "done: $(incus --version 2>/dev/null | sed 's/^/incus client /')"
