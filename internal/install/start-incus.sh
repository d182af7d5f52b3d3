#!/usr/bin/env bash
# start-incus.sh makes sure the system's Incus daemon answers on its default
# socket, for `make demo`. Under systemd it starts the packaged units; without
# systemd (containers, sandboxes) it starts incusd directly in the background,
# logging to /var/log/incus/incusd.log. `incus admin shutdown` stops it.
set -euo pipefail
log() { printf 'start-incus: %s\n' "$*" >&2; }

if incus info >/dev/null 2>&1; then
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { log "error: Incus is not running and starting it needs root"; exit 1; }

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  log "starting incus through systemd"
  systemctl start incus.socket incus.service
else
  log "no systemd: starting /usr/libexec/incus/incusd directly"
  mkdir -p /var/log/incus
  setsid /usr/libexec/incus/incusd --group incus-admin \
    </dev/null >>/var/log/incus/incusd.log 2>&1 &
fi
if ! incus admin waitready --timeout 60; then
  log "error: incusd did not become ready; last log lines:"
  tail -n 20 /var/log/incus/incusd.log >&2 || true
  exit 1
fi
log "incus $(incus version 2>/dev/null | awk '/Server version/ {print $3}') is ready"
