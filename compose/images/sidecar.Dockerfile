# The agent-sidecar image. Build from the repo root:
#   docker build -f compose/images/sidecar.Dockerfile -t agent-sidecar .
# NODE_IMAGE defaults to the official image; CI builds a local one with the same name.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY . .
# With node_modules in the context (after `npm ci` on the host) prune it offline;
# otherwise install production dependencies with the image's npm.
RUN if [ -d node_modules ]; then node compose/images/prune-dev-deps.mjs; \
    else npm ci --omit=dev --ignore-scripts --no-audit --no-fund; fi \
 && rm -rf agents compose/images test bench

FROM ${NODE_IMAGE}
# iptables is needed by the egress lockdown step; the official slim image lacks it.
RUN if ! command -v iptables >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends iptables && rm -rf /var/lib/apt/lists/*; \
    fi \
 && (getent passwd 10001 >/dev/null || useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar) \
 && mkdir -p /etc/agent-sidecar /var/lib/agent-sidecar/audit \
 && chown 10001:10001 /var/lib/agent-sidecar/audit
WORKDIR /app
COPY --from=build /app /app
ENV NODE_ENV=production \
    SIDECAR_LISTEN=0.0.0.0:15000 \
    SIDECAR_AUDIT_DIR=/var/lib/agent-sidecar/audit
USER 10001:10001
ENTRYPOINT ["node", "/app/bin/agent-sidecar.js"]
CMD ["--help"]
