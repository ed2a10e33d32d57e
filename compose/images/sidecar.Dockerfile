# The agent-sidecar image. Build from the repo root:
#   docker build -f compose/images/sidecar.Dockerfile -t agent-sidecar .
# NODE_IMAGE defaults to the official image; CI builds a local one with the same name.
#
# Users: 10001 runs the sidecar (the image's default USER); 10002 is the agent's UID, named here only so the egress
# lockdown's self-check and `ps` read well. `run` starts as root only in compose, to install the lockdown, and then
# drops to 10001 with no capabilities (compose/images/sidecar-entrypoint.sh; docs/containers.md).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY . .
# With node_modules in the context (after `npm install` on the host) prune it offline;
# otherwise install production dependencies with the image's npm.
RUN if [ -d node_modules ]; then node compose/images/prune-dev-deps.mjs; \
    else npm install --omit=dev --ignore-scripts --no-audit --no-fund; fi \
 && rm -rf agents compose deploy test bench

FROM ${NODE_IMAGE}
# iptables is needed by the egress lockdown; the official slim image lacks it (the local CI base has it).
RUN if ! command -v iptables >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends iptables && rm -rf /var/lib/apt/lists/*; \
    fi \
 && (getent group 10001 >/dev/null || groupadd --system --gid 10001 sidecar) \
 && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sidecar) \
 && (getent group 10002 >/dev/null || groupadd --system --gid 10002 agent) \
 && (getent passwd 10002 >/dev/null || useradd --system --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin agent) \
 && mkdir -p /etc/agent-sidecar /var/lib/agent-sidecar/audit /var/lib/agent-sidecar/identity /run/agent-sidecar \
      /usr/local/lib/agent-sidecar \
 && chown 10001:10001 /var/lib/agent-sidecar/audit /var/lib/agent-sidecar/identity \
 && chmod 0700 /var/lib/agent-sidecar/audit /var/lib/agent-sidecar/identity
WORKDIR /app
COPY --from=build /app /app
COPY compose/images/egress-lockdown.sh /usr/local/sbin/egress-lockdown
COPY compose/images/sidecar-entrypoint.sh /usr/local/bin/sidecar-entrypoint
COPY compose/images/sidecar-healthcheck.sh /usr/local/bin/sidecar-healthcheck
COPY compose/images/role-keys.sh /usr/local/bin/role-keys
COPY compose/images/agent-sidecar-cli.sh /usr/local/bin/agent-sidecar
COPY agents/probe-agent/probe.ts /usr/local/lib/agent-sidecar/probe.ts
RUN chmod 0755 /usr/local/sbin/egress-lockdown /usr/local/bin/sidecar-entrypoint /usr/local/bin/sidecar-healthcheck \
      /usr/local/bin/role-keys /usr/local/bin/agent-sidecar \
 && chmod 0644 /usr/local/lib/agent-sidecar/probe.ts
ENV NODE_ENV=production \
    SIDECAR_UID=10001 \
    SIDECAR_LISTEN=127.0.0.1:15000 \
    SIDECAR_AUDIT_DIR=/var/lib/agent-sidecar/audit
USER 10001:10001
# Health = the lockdown was verified (its rules unchanged) and /readyz answers 200: /usr/local/bin/sidecar-healthcheck.
# The compose stacks and the Kubernetes probes run it. It is not an image HEALTHCHECK because the same image also runs
# one-off commands (policy check, audit verify, the key ceremony) that would never turn healthy.
ENTRYPOINT ["/usr/local/bin/sidecar-entrypoint"]
CMD ["--help"]
