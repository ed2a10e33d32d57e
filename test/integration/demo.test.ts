// The one-command demo (compose/demo.yaml, built from the real Dockerfiles) driven by the walkthrough's own steps: each
// step's expected outcomes must hold against the real containers, and the walkthrough CLI must pass on the same stack.
import { randomBytes } from 'node:crypto';
import { DockerComposeEnvironment, type StartedDockerComposeEnvironment, Wait } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ComposeStack, REPO_ROOT, run } from '../../agents/walkthrough/compose-stack.ts';
import { RouterClient } from '../../agents/walkthrough/router-client.ts';
import {
  approvedDeleteStep,
  auditVerifyStep,
  compromisedStep,
  type DemoContext,
  hiddenToolStep,
  knowledgeBaseStep,
  misroutedStep,
  type StepResult,
  spendStep,
} from '../../agents/walkthrough/steps.ts';
import { NODE_IMAGE } from './support/images.ts';

const project = `demo-it-${randomBytes(4).toString('hex')}`;
// ROUTER_PORT=0: the router's published port is picked by Docker, so a demo running on 8000 does not collide.
const env = { NODE_IMAGE, ROUTER_PORT: '0' };

describe('the helpdesk demo (compose/demo.yaml) and its walkthrough', () => {
  const stack = new ComposeStack({ project, env });
  let compose: StartedDockerComposeEnvironment | undefined;
  let router: RouterClient;
  const started = performance.now();
  const narration: string[] = [];
  const ctx = (): DemoContext => ({ stack, router, say: (line) => narration.push(line) });

  /** Every check of the step held; on failure the message shows which did not, and the step's narration. */
  const expectAllHeld = (result: StepResult) => {
    const failed = result.checks.filter((c) => !c.ok);
    expect(failed, `${result.number}. ${result.title}\n${narration.join('\n')}`).toEqual([]);
    expect(result.checks.length).toBeGreaterThan(0);
    expect(result.ok).toBe(true);
    narration.length = 0;
  };

  beforeAll(async () => {
    compose = await new DockerComposeEnvironment(`${REPO_ROOT}/compose`, 'demo.yaml')
      .withProjectName(project)
      .withBuild()
      .withEnvironment(env)
      .withWaitStrategy('router-1', Wait.forHealthCheck())
      .withStartupTimeout(300_000)
      .up();
    router = new RouterClient(await stack.routerUrl());
    console.info(`demo stack up in ${Math.round((performance.now() - started) / 1000)} s`);
  });

  afterAll(async () => {
    await compose?.down({ removeVolumes: true, timeout: 0 }).catch(() => undefined);
    // Also when `up` failed half-way: whatever the project left behind goes (containers, networks, volumes).
    await stack.down();
    console.info(`demo suite: ${Math.round((performance.now() - started) / 1000)} s in all`);
  });

  it('1. a basic user asks the knowledge base: allowed, answered from SQLite through MCP, audited', async () => {
    expectAllHeld(await knowledgeBaseStep(ctx()));
  });

  it('2. a basic user asks to delete a user: not in tools/list, and a direct MCP call is denied', async () => {
    const r = await hiddenToolStep(ctx());
    expectAllHeld(r);
    expect(r.facts['directDecision']).toEqual(expect.any(String));
  });

  it('3. an admin deletes a user only after `agent-sidecar approvals approve` in the admin sidecar', async () => {
    const r = await approvedDeleteStep(ctx());
    expectAllHeld(r);
    expect(r.facts['deleted']).toBe('u-1005');
  });

  it('4. the misrouted request is refused by the admin sidecar as misrouted, audited with both identities', async () => {
    const r = await misroutedStep(ctx());
    expectAllHeld(r);
    // The router is back without the bug: a basic user reaches the basic-user agent again.
    const ada = await router.login('ada');
    expect((await router.chat(ada.token, { message: 'hello' })).routed_to).toBe('basic-user');
  });

  it('5. the compromised agent is contained: admin tools, proxy, direct egress, DNS, other roles', async () => {
    const r = await compromisedStep(ctx());
    expectAllHeld(r);
    expect(r.facts['attempts']).toBeGreaterThan(20);
  });

  it('6. `agent-sidecar audit verify` passes on every role’s chain', async () => {
    const r = await auditVerifyStep(ctx());
    expectAllHeld(r);
    for (const role of ['basic-user', 'support-agent', 'admin']) expect(r.facts[role]).toBeGreaterThan(0);
  });

  it('7. spend is counted per role by each sidecar’s model gateway', async () => {
    expectAllHeld(await spendStep(ctx()));
  });

  it('the walkthrough CLI reuses the running stack and exits 0 with every step as expected', async () => {
    const r = await run(
      process.execPath,
      ['agents/walkthrough/main.ts', '--project', project, '--no-build'],
      {
        env,
        timeoutMs: 300_000,
      },
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`Reusing the running stack (project ${project}).`);
    for (const n of [1, 2, 3, 4, 5, 6, 7]) expect(r.stdout).toMatch(new RegExp(`✔ ${n}\\. `));
    expect(r.stdout).toContain('All 7 steps went as expected.');
  });
});
