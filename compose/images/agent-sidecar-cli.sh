#!/bin/sh
# `agent-sidecar` on the image's PATH, for the commands an operator execs beside the running sidecar (audit query,
# approvals, policy check). Every command but `run` raises its own OOM score before Node starts, so that when the
# container runs short of memory the kernel's OOM killer takes the tool, not the sidecar (docs/containers.md).
[ "${1:-}" = run ] || echo 1000 >/proc/self/oom_score_adj 2>/dev/null || true
exec node /app/bin/agent-sidecar.js "$@"
