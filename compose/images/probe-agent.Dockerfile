# The probe agent: a stand-in for a role's agent in the container stacks (agents/probe-agent/README.md).
# Build from the repo root: docker build -f compose/images/probe-agent.Dockerfile -t agent-sidecar-probe-agent .
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE}
# The agent's UID differs from the sidecar's (10001): the egress lockdown tells them apart by UID. No file in the
# image keeps a setuid or setgid bit (no-new-privileges neuters them anyway; this is the second lock).
RUN (getent group 10002 >/dev/null || groupadd --system --gid 10002 agent) \
 && (getent passwd 10002 >/dev/null || useradd --system --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin agent) \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
 && mkdir -p /opt/probe-agent \
 && printf '#!/bin/sh\nexec node /opt/probe-agent/probe.ts "$@"\n' >/usr/local/bin/probe \
 && chmod 0755 /usr/local/bin/probe
COPY agents/probe-agent/probe.ts /opt/probe-agent/probe.ts
USER 10002:10002
ENV NODE_ENV=production
ENTRYPOINT ["/usr/local/bin/probe"]
CMD ["idle"]
