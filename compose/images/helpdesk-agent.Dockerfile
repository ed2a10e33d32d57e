# The helpdesk agent (agents/helpdesk-agent/): the same image for every role; the role is the sidecar next to it.
# It also carries the probe (agents/probe-agent/probe.ts as /usr/local/bin/probe) so the isolation suite can check the
# real agent's container from inside. Build from the repo root:
#   docker build -f compose/images/helpdesk-agent.Dockerfile -t agent-sidecar-helpdesk-agent .
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY . .
# Only the agent, its shared helpers and production node_modules stay: no sidecar code, no other agent, no policy.
RUN if [ -d node_modules ]; then node compose/images/prune-dev-deps.mjs; \
    else npm install --omit=dev --ignore-scripts --no-audit --no-fund; fi \
 && find agents -mindepth 1 -maxdepth 1 ! -name helpdesk-agent ! -name lib -exec rm -rf {} + \
 && rm -rf sidecar bin compose deploy test bench

FROM ${NODE_IMAGE}
# UID 10002 is the agent's: the sidecar's egress lockdown lets only the sidecar's UID (10001) out. No file keeps a
# setuid or setgid bit (no-new-privileges neuters them anyway; this is the second lock).
RUN (getent group 10002 >/dev/null || groupadd --system --gid 10002 agent) \
 && (getent passwd 10002 >/dev/null || useradd --system --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin agent) \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
 && mkdir -p /opt/probe-agent \
 && printf '#!/bin/sh\nexec node /opt/probe-agent/probe.ts "$@"\n' >/usr/local/bin/probe \
 && chmod 0755 /usr/local/bin/probe
WORKDIR /app
COPY --from=build /app /app
COPY agents/probe-agent/probe.ts /opt/probe-agent/probe.ts
USER 10002:10002
ENV NODE_ENV=production \
    AGENT_LISTEN=0.0.0.0:8088
EXPOSE 8088
CMD ["node", "agents/helpdesk-agent/main.ts"]
