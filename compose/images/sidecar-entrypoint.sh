#!/bin/sh
# The sidecar image's entrypoint. `run` never starts without a verified egress lockdown:
#   SIDECAR_LOCKDOWN=install  (the default as root) install and prove it here, then drop to the sidecar UID with no
#                             capabilities and no way back (compose: one container holds the pod's namespace);
#   SIDECAR_LOCKDOWN=external an init container did it: start only if its marker is there (Kubernetes);
#   SIDECAR_LOCKDOWN=off      nothing shares this namespace (a bare sidecar in development or a test).
# Any other command (policy check, audit verify, ...) runs as the sidecar UID without the lockdown.
set -eu

SIDECAR_UID=${SIDECAR_UID:-10001}
CLI=/app/bin/agent-sidecar.js
MARKER=${LOCKDOWN_MARKER:-/run/agent-sidecar/lockdown-verified}

say() { printf 'sidecar-entrypoint: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

as_root=false
[ "$(id -u)" = 0 ] && as_root=true

# Drops to the sidecar UID: no supplementary groups, empty inheritable and bounding sets, no_new_privs.
start() {
  if $as_root; then
    exec setpriv --reuid "$SIDECAR_UID" --regid "$SIDECAR_UID" --clear-groups \
      --inh-caps=-all --bounding-set=-all --no-new-privs -- node "$CLI" "$@"
  fi
  exec node "$CLI" "$@"
}

# A random admin token in the sidecar's runtime tmpfs, readable by the sidecar UID only. The agent's container
# does not mount that tmpfs, so it cannot read it whatever its UID.
generate_admin_token() {
  file=${SIDECAR_ADMIN_TOKEN_FILE:-}
  [ -n "$file" ] || die "SIDECAR_GENERATE_ADMIN_TOKEN needs SIDECAR_ADMIN_TOKEN_FILE"
  $as_root || die "SIDECAR_GENERATE_ADMIN_TOKEN needs the entrypoint to start as root"
  umask 077
  head -c 32 /dev/urandom | base64 | tr -d '\n=' >"$file" || die "cannot write $file (mount a tmpfs there)"
  chmod 0400 "$file"
  chown "$SIDECAR_UID:$SIDECAR_UID" "$file"
  say "admin token generated in $file"
}

if [ "${1:-}" != run ]; then start "$@"; fi

mode=${SIDECAR_LOCKDOWN:-}
if [ -z "$mode" ]; then
  if $as_root; then mode=install; else
    die "refusing to run without the egress lockdown: start as root with NET_ADMIN (compose does), or set
SIDECAR_LOCKDOWN=external after an init container installed it (Kubernetes does), or SIDECAR_LOCKDOWN=off when no
agent shares this network namespace. See docs/containers.md."
  fi
fi
case "$mode" in
install)
  $as_root || die "SIDECAR_LOCKDOWN=install needs root with NET_ADMIN"
  egress-lockdown install
  egress-lockdown verify
  ;;
external)
  [ -s "$MARKER" ] || die "SIDECAR_LOCKDOWN=external but no verified lockdown at $MARKER"
  say "lockdown verified by an init container: $(sed -n 's/^verified_at //p' "$MARKER")"
  ;;
off)
  say "WARNING: SIDECAR_LOCKDOWN=off: nothing stops a process in this network namespace from bypassing the sidecar"
  ;;
*) die "SIDECAR_LOCKDOWN must be install, external or off, not $mode" ;;
esac

case "${SIDECAR_GENERATE_ADMIN_TOKEN:-false}" in
true | 1) generate_admin_token ;;
esac
start "$@"
