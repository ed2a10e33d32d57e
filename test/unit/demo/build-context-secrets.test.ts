// Found by review, round 7 (fixed in .dockerignore): the images are built from the repository root, and the root .dockerignore is a
// deny-list (policies, tests, docs, some dev packages). The docs tell operators to create secrets in that very
// directory: docs/kubernetes.md "Applying it" (run from the repo root: `kubectl apply -f deploy/k8s/...`) reads
// `./admin-token`, `./model-api-key` and `./basic-user.private.jwk.json`; docs/admin-api.md writes `admin-token`;
// README's quick start writes the audit chain to `./audit`. Nothing keeps those files out of the build context, and
// the three Dockerfiles that `COPY . .` only delete named directories before `COPY --from=build /app /app`, so every
// secret lands in /app of agent-sidecar, agent-sidecar-demo-services and agent-sidecar-helpdesk-agent (the demo's
// agent: a 0644 model key there is readable by UID 10002), and in the image layers pushed to the registry.
//
// Claims it breaks: threat model 9 "The agent holds no model key"; 3/5 "the role's key, which only that role's sidecar
// holds" / "(5) the sidecar holds only its own policy and key"; containers.md "no secret" in the agent's container
// and docs/kubernetes.md "Secret ... mounted read-only in the sidecar only".
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

/** The root .dockerignore, matched the way BuildKit does (moby/patternmatcher): last match wins, parents count. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      let p = posix.normalize(negate ? l.slice(1).trim() : l).replace(/^\/+/, '');
      if (p.endsWith('/')) p = p.slice(0, -1);
      let re = '';
      for (let i = 0; i < p.length; i++) {
        const c = p[i]!;
        if (c === '*' && p[i + 1] === '*') {
          if (p[i + 2] === '/') {
            re += '(?:.*/)?';
            i += 2;
          } else {
            re += '.*';
            i += 1;
          }
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path) => {
    const parts = path.split('/');
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const r of rules) if (candidates.some((c) => r.re.test(c))) excluded = !r.negate;
    return excluded;
  };
}

/** The top-level names a Dockerfile's build stage deletes after `COPY . .` (`rm -rf a b c`). */
function removedInBuildStage(dockerfile: string): string[] {
  const m = /rm -rf ([^\n\\&|;]+)/.exec(dockerfile);
  return m ? m[1]!.trim().split(/\s+/) : [];
}

// The files the docs have an operator create in the repository root, each with where the docs say so.
function secretsTheDocsPutInTheRepoRoot(): Array<{ path: string; from: string }> {
  const out: Array<{ path: string; from: string }> = [];
  const k8s = read('docs/kubernetes.md');
  // The commands are run from the repo root: they also apply deploy/k8s/... by relative path.
  expect(k8s).toMatch(/kubectl apply -f deploy\/k8s\//);
  for (const m of k8s.matchAll(/--from-file=(?:[\w.-]+=)?\.\/(\S+)/g)) {
    if (!/public/.test(m[1]!)) out.push({ path: m[1]!, from: 'docs/kubernetes.md' });
  }
  const admin = read('docs/admin-api.md');
  for (const m of admin.matchAll(/openssl rand [^>\n]*> (\S+)/g))
    out.push({ path: m[1]!, from: 'docs/admin-api.md' });
  const readme = read('README.md');
  for (const m of readme.matchAll(/--audit-dir \.\/(\S+)/g)) {
    out.push({ path: `${m[1]}/basic-user.audit.jsonl`, from: 'README.md quick start' });
  }
  // .gitignore keeps a local audit directory out of git; the image build context is a different list.
  if (read('.gitignore').split('\n').includes('.audit/')) {
    out.push({ path: '.audit/basic-user.audit.jsonl', from: '.gitignore' });
  }
  return out.filter((s, i) => out.findIndex((o) => o.path === s.path) === i);
}

const IMAGES_BUILT_FROM_THE_ROOT = [
  'compose/images/sidecar.Dockerfile',
  'compose/images/demo-services.Dockerfile',
  'compose/images/helpdesk-agent.Dockerfile',
];

describe('r7-ct: secrets an operator keeps in the repo root stay out of every image', () => {
  const ignored = dockerignore(read('.dockerignore'));
  const secrets = secretsTheDocsPutInTheRepoRoot();

  it('matches .dockerignore as BuildKit does (sanity: what it is meant to keep out is kept out)', () => {
    expect(ignored('policies/basic-user.yaml')).toBe(true);
    expect(ignored('test/unit/x.test.ts')).toBe(true);
    expect(ignored('node_modules/vitest/package.json')).toBe(true);
    expect(ignored('sidecar/index.ts')).toBe(false);
    expect(ignored('package.json')).toBe(false);
  });

  it('finds the files the docs create (model key, context-signing key, admin token, audit chain)', () => {
    const paths = secrets.map((s) => s.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'model-api-key',
        'basic-user.private.jwk.json',
        'admin-token',
        'audit/basic-user.audit.jsonl',
      ]),
    );
  });

  it.each(IMAGES_BUILT_FROM_THE_ROOT)('%s: none of them reaches /app of the final image', (dockerfile) => {
    const text = read(dockerfile);
    // The shape this test models: the whole root copied into the build stage, then /app copied whole.
    expect(text).toMatch(/^COPY \. \.$/m);
    expect(text).toMatch(/^COPY --from=build \/app \/app$/m);
    const removed = removedInBuildStage(text);
    const shipped = secrets
      .filter((s) => !ignored(s.path) && !removed.includes(s.path.split('/')[0]!))
      .map((s) => `/app/${s.path} (${s.from})`);
    expect(shipped, `${dockerfile} bakes these into the image`).toEqual([]);
  });
});
