#!/usr/bin/env bash
# debusine-deps.sh installs what the whole-task benchmark compares against:
# Debusine's own executor code (python3-debusine), from the distribution's
# backports suite when the distribution itself does not carry it. The
# backports source is derived from the machine's own Debian source by
# internal/install/install-deps.sh (no mirror host name is written here).
# Quiet and quick when the package is there already. Only the benchmark
# needs it: `make test` does not install it.
set -euo pipefail

# Debian's own interpreter, where python3-debusine goes (not a python3
# earlier on PATH, from pyenv or a virtualenv).

log() { printf 'debusine-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if /usr/bin/python3 -c 'import debusine.tasks.executors.incus' 2>/dev/null; then
  exit 0
fi
[ "$(id -u)" = 0 ] || die "python3-debusine is missing and installing it needs root"
command -v apt-get >/dev/null 2>&1 || die "python3-debusine is missing; only Debian (apt) is supported"
here=$(cd "$(dirname "$0")" && pwd)
codename=$( . /etc/os-release; printf '%s' "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "cannot tell the distribution's codename from /etc/os-release"

export DEBIAN_FRONTEND=noninteractive
apt_quiet() { apt-get -qq -o Dpkg::Use-Pty=0 "$@" >/dev/null; }
candidate() { apt-cache policy python3-debusine 2>/dev/null | awk '/Candidate:/ {print $2}'; }
in_backports() { apt-cache policy python3-debusine 2>/dev/null | grep -q -- "$codename-backports"; }

apt_quiet update
if ! in_backports; then
  if ! ls /etc/apt/sources.list.d/incusexec-backports.* >/dev/null 2>&1; then
    derived=$(bash "$here/../install/install-deps.sh" --print-backports-source)
    if printf '%s\n' "$derived" | head -1 | grep -q '^deb '; then
      target=/etc/apt/sources.list.d/incusexec-backports.list
    else
      target=/etc/apt/sources.list.d/incusexec-backports.sources
    fi
    printf '%s\n' "$derived" >"$target"
    log "added $target (derived from the existing $codename source)"
    apt_quiet update
  fi
fi
cand=$(candidate)
[ -n "$cand" ] && [ "$cand" != "(none)" ] || die "python3-debusine is not available from $codename or $codename-backports"
release=()
in_backports && release=(-t "$codename-backports")
log "installing python3-debusine $cand"
apt_quiet install -y --no-install-recommends "${release[@]}" python3-debusine
/usr/bin/python3 -c 'import debusine.tasks.executors.incus' || die "python3-debusine installed but debusine.tasks.executors.incus does not import"
