#!/bin/sh
# The sidecar's health: the egress lockdown was verified (and, where this check may read the rules, they have not
# changed since), and the sidecar answers /readyz on its agent port. Used by the image's HEALTHCHECK and by the
# Kubernetes startup and liveness probes.
set -eu
# This check runs every few seconds beside the sidecar, inside the same memory limit: if the container runs short,
# the kernel's OOM killer takes the check (it only fails one round), not the sidecar.
echo 1000 >/proc/self/oom_score_adj 2>/dev/null || true
MARKER=${LOCKDOWN_MARKER:-/run/agent-sidecar/lockdown-verified}

if [ "${SIDECAR_LOCKDOWN:-}" != off ]; then
  [ -s "$MARKER" ] || {
    echo "egress lockdown not verified"
    exit 1
  }
  # As root (the compose sidecar's healthcheck) with NET_ADMIN the live rules are compared with the verified ones.
  if [ "$(id -u)" = 0 ]; then egress-lockdown check; fi
fi
exec node -e '
const port = (process.env.SIDECAR_LISTEN || "127.0.0.1:15000").split(":").pop();
fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) })
  .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));
'
