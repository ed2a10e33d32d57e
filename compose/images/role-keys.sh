#!/bin/sh
# Development-only key ceremony for the compose demo: one Ed25519 context-token key pair per role (ROLES), the private
# key in /keys/<role>/ (that role's volume, mounted only in that role's sidecar, owned by the sidecar UID, mode 0400)
# and the public key in /keys/public/ (mounted read-only in the tool server); and, when /keys/model is mounted, the
# model stand-in's API key (mounted in the sidecars and the stand-in, never in an agent). Existing keys are kept.
# Runs as root with CHOWN and DAC_OVERRIDE only, and no network. Production keys come from a secret store instead;
# see docs/containers.md.
set -eu
SIDECAR_UID=${SIDECAR_UID:-10001}
PUBLIC=/keys/public
[ -n "${ROLES:-}" ] || {
  echo "role-keys: ROLES is empty" >&2
  exit 2
}
for role in $ROLES; do
  dir=/keys/$role
  [ -d "$dir" ] || {
    echo "role-keys: no volume at $dir" >&2
    exit 1
  }
  if [ -s "$dir/$role.private.jwk.json" ] && [ -s "$PUBLIC/$role.public.jwk.json" ]; then
    echo "role-keys: $role: kept"
    continue
  fi
  rm -f "$dir/$role.private.jwk.json" "$PUBLIC/$role.public.jwk.json"
  node --input-type=module -e '
import { writeFileSync } from "node:fs";
import { generateRoleKeyPair, privateKeyFileName, publicKeyFileName } from "/app/sidecar/identity/keys.ts";
const [role, dir, pub] = process.argv.slice(1);
const pair = await generateRoleKeyPair();
writeFileSync(`${dir}/${privateKeyFileName(role)}`, `${JSON.stringify(pair.privateJwk)}\n`, { mode: 0o400 });
writeFileSync(`${pub}/${publicKeyFileName(role)}`, `${JSON.stringify(pair.publicJwk)}\n`, { mode: 0o444 });
console.log(`role-keys: ${role}: generated ${pair.kid}`);
' "$role" "$dir" "$PUBLIC"
  # chmod before chown: once the sidecar UID owns the directory, root (without FOWNER) may no longer chmod it.
  if [ "$(stat -c %u "$dir")" = 0 ]; then chmod 0700 "$dir"; fi
  chown -R "$SIDECAR_UID:$SIDECAR_UID" "$dir"
done
if [ "$(stat -c %u "$PUBLIC")" = 0 ]; then chmod 0755 "$PUBLIC"; fi
if [ -d /keys/model ] && [ ! -s /keys/model/api-key ]; then
  (umask 022 && head -c 32 /dev/urandom | base64 | tr -d '\n=+/' >/keys/model/api-key)
  chmod 0444 /keys/model/api-key
  echo "role-keys: model API key generated"
fi
