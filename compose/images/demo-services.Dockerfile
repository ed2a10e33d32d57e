# The demo's shared services in one image: the model stand-in, the helpdesk MCP tool server and the status service.
# The compose file picks one with `command`. Build from the repo root:
#   docker build -f compose/images/demo-services.Dockerfile -t agent-sidecar-demo-services .
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY . .
# The tool server imports the sidecar's identity code, so sidecar/ stays; node_modules loses its dev packages.
RUN if [ -d node_modules ]; then node compose/images/prune-dev-deps.mjs; \
    else npm install --omit=dev --ignore-scripts --no-audit --no-fund; fi \
 && rm -rf agents/probe-agent bin compose deploy test bench

FROM ${NODE_IMAGE}
RUN (getent group 10003 >/dev/null || groupadd --system --gid 10003 demo) \
 && (getent passwd 10003 >/dev/null || useradd --system --uid 10003 --gid 10003 --no-create-home --shell /usr/sbin/nologin demo) \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
 && mkdir -p /var/lib/helpdesk && chown 10003:10003 /var/lib/helpdesk
WORKDIR /app
COPY --from=build /app /app
USER 10003:10003
ENV NODE_ENV=production
CMD ["node", "agents/status-service/main.ts"]
