// Development-only key ceremony for the demo's identity provider: the router's private key and the sidecars' JWKS.
//
//   node agents/router/issuer-keys.ts      (compose: the one-shot `issuer-keys` service, as root with CHOWN and
//                                           DAC_OVERRIDE only, no network)
//
// ISSUER_PRIVATE_DIR (/keys/private): issuer.private.jwk.json, owned by ROUTER_UID (10003), mode 0400, in a volume
// only the router mounts. ISSUER_JWKS_DIR (/keys/jwks): jwks.json, mode 0444, mounted read-only in every sidecar.
// An existing pair is kept. Production uses the identity provider's own keys and JWKS instead.
import { chmodSync, chownSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateIssuerKeyPair, ISSUER_JWKS_FILE, ISSUER_PRIVATE_FILE } from './issuer.ts';

const privateDir = process.env['ISSUER_PRIVATE_DIR'] || '/keys/private';
const jwksDir = process.env['ISSUER_JWKS_DIR'] || '/keys/jwks';
const routerUid = Number(process.env['ROUTER_UID'] || '10003');

const say = (msg: string): void => void process.stdout.write(`issuer-keys: ${msg}\n`);

function kept(): boolean {
  const priv = join(privateDir, ISSUER_PRIVATE_FILE);
  const pub = join(jwksDir, ISSUER_JWKS_FILE);
  if (!existsSync(priv) || !existsSync(pub)) return false;
  try {
    const jwks = JSON.parse(readFileSync(pub, 'utf8')) as { keys?: Array<{ x?: string }> };
    const key = JSON.parse(readFileSync(priv, 'utf8')) as { x?: string };
    return jwks.keys?.[0]?.x !== undefined && jwks.keys[0].x === key.x;
  } catch {
    return false;
  }
}

if (!Number.isInteger(routerUid) || routerUid <= 0) {
  say('ROUTER_UID must be a non-root UID');
  process.exit(2);
}
for (const dir of [privateDir, jwksDir]) {
  if (!existsSync(dir)) {
    say(`no volume at ${dir}`);
    process.exit(1);
  }
}

if (kept()) {
  say('kept the existing issuer key');
} else {
  const pair = await generateIssuerKeyPair();
  const priv = join(privateDir, ISSUER_PRIVATE_FILE);
  const pub = join(jwksDir, ISSUER_JWKS_FILE);
  rmSync(priv, { force: true });
  rmSync(pub, { force: true });
  writeFileSync(priv, `${JSON.stringify(pair.privateJwk)}\n`, { mode: 0o400 });
  writeFileSync(pub, `${JSON.stringify(pair.jwks)}\n`, { mode: 0o444 });
  chownSync(priv, routerUid, routerUid);
  say(`generated issuer key ${String(pair.jwks.keys[0]?.kid)}`);
}
// chmod before chown: once the router owns the directory, root without FOWNER may no longer chmod it.
if (statSync(privateDir).uid === 0) {
  chmodSync(privateDir, 0o700);
  chownSync(privateDir, routerUid, routerUid);
}
if (statSync(jwksDir).uid === 0) chmodSync(jwksDir, 0o755);
