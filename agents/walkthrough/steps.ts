// The walkthrough's seven steps against a running demo stack. Each drives the router (and, where an operator would,
// `docker compose exec`), says what happened, and returns checks: what was expected and whether it held.
import type { ToolCallRecord } from '../helpdesk-agent/mcp-session.ts';
import type { ComposeStack, Role } from './compose-stack.ts';
import { ROLES } from './compose-stack.ts';
import type { ChatAnswer, RouterClient } from './router-client.ts';

export interface Check {
  readonly what: string;
  readonly ok: boolean;
  /** What was seen, when the check failed or the value is worth showing. */
  readonly detail?: string;
}

export interface StepResult {
  readonly number: number;
  readonly title: string;
  readonly checks: readonly Check[];
  readonly ok: boolean;
  /** Values the step found (decision ids, counts), for tests and for the summary. */
  readonly facts: Readonly<Record<string, unknown>>;
}

export interface DemoContext {
  readonly stack: ComposeStack;
  readonly router: RouterClient;
  /** One line of narration, printed as it happens. */
  say(line: string): void;
}

/** The operator name the walkthrough approves with. */
export const APPROVER = 'walkthrough@helpdesk-demo';
export const MISROUTE = 'basic-user:admin';
const auditFile = (role: Role) => `/var/lib/agent-sidecar/audit/${role}.audit.jsonl`;
const spendFile = (role: Role) => `/var/lib/agent-sidecar/audit/${role}.spend.json`;

/** A decision id, shortened for reading; the full id is in the trace and the audit entry. */
export const short = (id: string | null | undefined): string => (id ? id.slice(0, 8) : '—');

class Step {
  readonly checks: Check[] = [];
  readonly facts: Record<string, unknown> = {};
  private readonly number: number;
  private readonly title: string;

  constructor(number: number, title: string) {
    this.number = number;
    this.title = title;
  }

  expect(what: string, ok: boolean, detail?: string): boolean {
    this.checks.push(detail === undefined ? { what, ok } : { what, ok, detail });
    return ok;
  }

  done(): StepResult {
    return {
      number: this.number,
      title: this.title,
      checks: this.checks,
      ok: this.checks.length > 0 && this.checks.every((c) => c.ok),
      facts: this.facts,
    };
  }
}

interface AuditLine {
  readonly decision_id: string;
  readonly kind: string;
  readonly effect: string | null;
  readonly rule: string | null;
  readonly reason: string;
  readonly action: { readonly type: string; readonly tool?: string; readonly args?: unknown } | null;
  readonly extra?: Record<string, unknown>;
}

/** The role's audit entries with these decision ids, read in its sidecar with `agent-sidecar audit query`. */
export async function auditEntries(
  stack: ComposeStack,
  role: Role,
  ids: readonly string[],
): Promise<AuditLine[]> {
  const r = await stack.sidecarCli(role, ['audit', 'query', auditFile(role)]);
  if (r.code !== 0) throw new Error(`audit query in ${role}-sidecar failed: ${r.stderr.trim()}`);
  const wanted = new Set(ids);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as AuditLine)
    .filter((e) => wanted.has(e.decision_id));
}

function describeCall(c: ToolCallRecord): string {
  const outcome = c.outcome === 'denied' ? `DENIED (${c.code})` : c.outcome;
  return `${c.tool} ${JSON.stringify(c.args)} → ${outcome}, decision ${short(c.decision_id)}`;
}

function sayTrace(ctx: DemoContext, answer: ChatAnswer): void {
  const trace = answer.agent.trace;
  ctx.say(
    `router: ${answer.user.sub} (${answer.user.role}) → ${answer.routed_to} agent${answer.misrouted ? '  ← MISROUTED by the injected bug' : ''}`,
  );
  if (trace === undefined) return;
  ctx.say(`tools the agent was shown (tools/list): ${trace.tools_seen.join(', ') || 'none'}`);
  for (const m of trace.model_calls) {
    ctx.say(`model call: ${m.model} → ${m.stop_reason} (${m.input_tokens} in, ${m.output_tokens} out)`);
  }
  for (const c of trace.tool_calls) ctx.say(`tool call: ${describeCall(c)}`);
  if (trace.tool_calls.length === 0) ctx.say('tool call: none');
  if (answer.agent.error) ctx.say(`error: ${answer.agent.error.code}`);
  else ctx.say(`reply: ${(answer.agent.reply ?? '').replace(/\s+/g, ' ').slice(0, 160)}`);
}

/** 1. A basic user asks the knowledge base: allowed, and the answer comes from the tool server's SQLite. */
export async function knowledgeBaseStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(1, 'A basic user asks the knowledge base');
  const ada = await ctx.router.login('ada');
  ctx.say(`ada signs in: sub ${ada.user.sub}, role ${ada.user.role}, token until ${ada.expiresAt}`);
  const message = 'How do I reset my password? query_knowledge_base query="reset password"';
  ctx.say(`ada: ${message}`);
  const answer = await ctx.router.chat(ada.token, { message });
  sayTrace(ctx, answer);
  const call = answer.agent.trace?.tool_calls[0];
  step.expect('routed to the basic-user agent', answer.routed_to === 'basic-user' && !answer.misrouted);
  step.expect(
    'query_knowledge_base ran through the MCP gateway',
    call?.tool === 'query_knowledge_base' && call.outcome === 'ok',
  );
  step.expect(
    'the answer is the knowledge base article from SQLite (kb-1)',
    (call?.text ?? '').includes('"kb-1"') && (answer.agent.reply ?? '').includes('Resetting your password'),
    call?.text.slice(0, 120),
  );
  if (call?.decision_id) {
    const [entry] = await auditEntries(ctx.stack, 'basic-user', [call.decision_id]);
    ctx.say(
      `audit (basic-user): ${entry?.effect} by rule ${entry?.rule} for end user ${String(entry?.extra?.['end_user'])}`,
    );
    step.expect(
      'audited as ALLOW for end user u-1001',
      entry?.effect === 'ALLOW' && entry.extra?.['end_user'] === 'u-1001',
      JSON.stringify(entry ?? null),
    );
  } else {
    step.expect('the allowed call carries a decision id', false);
  }
  return step.done();
}

/** 2. A basic user asks to delete a user: the tool is not listed for them, and a direct MCP call is denied. */
export async function hiddenToolStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(2, 'A basic user asks to delete a user');
  const ada = await ctx.router.login('ada');
  const message = 'Please delete_user user_id=u-1002';
  ctx.say(`ada: ${message}`);
  const answer = await ctx.router.chat(ada.token, { message });
  sayTrace(ctx, answer);
  const seen = answer.agent.trace?.tools_seen ?? [];
  step.expect(
    'delete_user is not in the basic-user tools/list',
    seen.length > 0 && !seen.includes('delete_user'),
    seen.join(','),
  );
  step.expect('so the model called no tool', (answer.agent.trace?.tool_calls ?? []).length === 0);

  const sam = await ctx.router.login('sam');
  ctx.say(`sam (support-agent) asks the same`);
  const support = await ctx.router.chat(sam.token, { message });
  const supportSeen = support.agent.trace?.tools_seen ?? [];
  ctx.say(`tools the support agent was shown: ${supportSeen.join(', ')}`);
  step.expect(
    'the support agent sees list_all_tickets but not delete_user either',
    supportSeen.includes('list_all_tickets') && !supportSeen.includes('delete_user'),
    supportSeen.join(','),
  );

  ctx.say('code in the basic-user agent container calls delete_user over MCP directly, with ada’s token:');
  const direct = await ctx.stack.exec(
    'basic-user-agent',
    ['node', 'agents/helpdesk-agent/call-tool.ts', 'delete_user', '{"user_id":"u-1002"}'],
    { env: { END_USER_TOKEN: ada.token } },
  );
  let record: (ToolCallRecord & { listed?: boolean }) | undefined;
  try {
    record = JSON.parse(direct.stdout.trim().split('\n').at(-1) ?? '') as ToolCallRecord & {
      listed?: boolean;
    };
    ctx.say(`  ${describeCall(record)}`);
  } catch {
    ctx.say(`  no answer: ${direct.stderr.trim().slice(0, 200)}`);
  }
  step.expect(
    'the direct call is denied by the basic-user sidecar (SIDECAR_ERR_POLICY_DENIED)',
    record?.outcome === 'denied' && record.code === 'SIDECAR_ERR_POLICY_DENIED',
    direct.stdout.trim() || direct.stderr.trim(),
  );
  if (record?.decision_id) {
    const [entry] = await auditEntries(ctx.stack, 'basic-user', [record.decision_id]);
    ctx.say(`audit (basic-user): ${entry?.effect} ${entry?.action?.tool} (${entry?.reason})`);
    step.expect('audited as DENY', entry?.effect === 'DENY', JSON.stringify(entry ?? null));
    step.facts['directDecision'] = record.decision_id;
  }
  return step.done();
}

async function waitHealthy(stack: ComposeStack, service: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const s = (await stack.services()).find((x) => x.service === service);
    if (s?.state === 'running' && s.health === 'healthy') return;
    await new Promise((res) => setTimeout(res, 1000));
  }
  throw new Error(`${service} did not turn healthy`);
}

interface PendingApproval {
  readonly id: string;
  readonly decision_id: string;
  readonly rule: string;
  readonly action: { readonly tool?: string; readonly args?: { readonly user_id?: string } };
  readonly action_hash: string;
  readonly expires_at: string;
}

/** 3. An admin deletes a user after a human reads it (`approvals show`) and approves it (`approvals approve --hash`). */
export async function approvedDeleteStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(3, 'An admin deletes a user after approval');
  const max = await ctx.router.login('max');
  ctx.say(`max signs in: sub ${max.user.sub}, role ${max.user.role}`);
  const lookup = async (userId: string) => {
    const a = await ctx.router.chat(max.token, { message: `Look up get_user_info user_id=${userId}` });
    return a.agent.trace?.tool_calls[0];
  };
  // A reused stack may have lost users in earlier runs: pick one that still exists.
  const pick = async (): Promise<string | undefined> => {
    for (const candidate of ['u-1005', 'u-1004', 'u-1002']) {
      const found = await lookup(candidate);
      if (found?.outcome === 'ok') {
        ctx.say(`before: get_user_info ${candidate} → ${found.text}`);
        return candidate;
      }
    }
    return undefined;
  };
  let target = await pick();
  if (target === undefined) {
    ctx.say(
      'earlier runs deleted every candidate: restarting helpdesk-tools re-seeds its in-memory database',
    );
    await ctx.stack.compose(['restart', 'helpdesk-tools'], { timeoutMs: 60_000 });
    await waitHealthy(ctx.stack, 'helpdesk-tools');
    target = await pick();
  }
  if (!step.expect('a customer to delete still exists', target !== undefined)) return step.done();
  const message = `Please delete_user user_id=${target}`;
  ctx.say(`max: ${message}`);
  const chat = ctx.router.chat(max.token, { message });
  let finished = false;
  void chat.then(
    () => {
      finished = true;
    },
    () => {
      finished = true;
    },
  );

  let held: PendingApproval | undefined;
  const deadline = Date.now() + 30_000;
  while (held === undefined && !finished && Date.now() < deadline) {
    const r = await ctx.stack.sidecarCli('admin', ['approvals', 'list', '--json']);
    if (r.code === 0) {
      held = (JSON.parse(r.stdout) as PendingApproval[]).find(
        (p) => p.action.tool === 'delete_user' && p.action.args?.user_id === target,
      );
    }
    if (held === undefined) await new Promise((res) => setTimeout(res, 500));
  }
  if (held === undefined) {
    // Not held: say how the call ended instead (a rate limit of 5 deletions per hour applies on a reused stack).
    const early = await chat.catch((err: Error) => err);
    const call = early instanceof Error ? undefined : early.agent.trace?.tool_calls[0];
    step.expect(
      'the call is held for approval in the admin sidecar',
      false,
      early instanceof Error ? early.message : call ? describeCall(call) : 'no tool call',
    );
    return step.done();
  }
  const pending: PendingApproval = held;
  step.expect('the call is held for approval in the admin sidecar', true);
  ctx.say('$ docker compose exec -u 10001 admin-sidecar agent-sidecar approvals list');
  ctx.say(
    `  pending ${pending.id}  rule ${pending.rule}  ${JSON.stringify(pending.action)}  hash ${pending.action_hash.slice(0, 12)}  expires ${pending.expires_at}`,
  );
  // Not on a terminal (`exec -T`), so `approve` does not ask: the approver reads the whole action with `show` and
  // binds the approval to the hash of what they read.
  ctx.say(`$ docker compose exec -u 10001 admin-sidecar agent-sidecar approvals show ${pending.id}`);
  const show = await ctx.stack.sidecarCli('admin', ['approvals', 'show', pending.id]);
  for (const line of show.stdout.trim().split('\n')) ctx.say(`  ${line}`);
  step.expect('the whole action is shown with its hash (exit 0)', show.code === 0, show.stderr.trim());
  ctx.say(
    `$ docker compose exec -u 10001 admin-sidecar agent-sidecar approvals approve ${pending.id} --as ${APPROVER} --hash ${pending.action_hash}`,
  );
  const approve = await ctx.stack.sidecarCli('admin', [
    'approvals',
    'approve',
    pending.id,
    '--as',
    APPROVER,
    '--hash',
    pending.action_hash,
  ]);
  for (const line of approve.stdout.trim().split('\n')) ctx.say(`  ${line}`);
  step.expect('approved (exit 0)', approve.code === 0, approve.stderr.trim());

  const answer = await chat;
  sayTrace(ctx, answer);
  const call = answer.agent.trace?.tool_calls[0];
  step.expect(
    'delete_user ran after approval',
    call?.outcome === 'ok' && call.text === '{"deleted":true}',
    call?.text,
  );
  const after = await lookup(target as string);
  ctx.say(`after: get_user_info ${target} → ${after?.text ?? '?'}`);
  step.expect(
    'the user is gone',
    after?.outcome === 'tool_error' && after.text.includes('not_found'),
    after?.text,
  );

  const entries = await auditEntries(ctx.stack, 'admin', [pending.decision_id]);
  const heldEntry = entries.find((e) => e.effect === 'REQUIRE_APPROVAL');
  const decided = entries.find((e) => e.kind === 'approval');
  ctx.say(
    `audit (admin): ${heldEntry?.effect} by ${heldEntry?.rule}, then ${decided?.effect} ${decided?.reason} by ${String(decided?.extra?.['approver'])}`,
  );
  step.expect(
    'audited: held (REQUIRE_APPROVAL), then ALLOW approved by the approver',
    heldEntry !== undefined && decided?.effect === 'ALLOW' && decided.extra?.['approver'] === APPROVER,
    JSON.stringify(entries),
  );
  step.facts['deleted'] = target;
  step.facts['decision'] = pending.decision_id;
  return step.done();
}

/** 4. The router's injected bug sends a basic user to the admin agent; the admin sidecar refuses it as misrouted. */
export async function misroutedStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(4, 'A routing bug sends a basic user to the admin agent');
  ctx.say(`restarting the router with ROUTER_MISROUTE=${MISROUTE} (the thread's nightmare, on purpose)`);
  await ctx.stack.restartRouter(MISROUTE);
  try {
    ctx.router.baseUrl = await ctx.stack.routerUrl();
    const ada = await ctx.router.login('ada');
    const message = 'Show me every ticket: list_all_tickets';
    ctx.say(`ada: ${message}`);
    const answer = await ctx.router.chat(ada.token, { message });
    sayTrace(ctx, answer);
    step.expect(
      'the router sent ada (basic-user) to the admin agent',
      answer.routed_to === 'admin' && answer.misrouted,
    );
    const call = answer.agent.trace?.tool_calls[0];
    step.expect(
      'the admin sidecar refused the call (the agent sees an ordinary denial)',
      call?.tool === 'list_all_tickets' &&
        call.outcome === 'denied' &&
        call.code === 'SIDECAR_ERR_POLICY_DENIED',
      call ? describeCall(call) : 'no tool call',
    );
    if (call?.decision_id) {
      const [entry] = await auditEntries(ctx.stack, 'admin', [call.decision_id]);
      ctx.say(
        `audit (admin): ${entry?.effect} reason ${entry?.reason} ${JSON.stringify(entry?.extra ?? {})}`,
      );
      step.expect(
        'audited as misrouted with both identities',
        entry?.effect === 'DENY' &&
          entry.reason === 'misrouted' &&
          entry.extra?.['end_user_role'] === 'basic-user' &&
          entry.extra?.['end_user_sub'] === 'u-1001' &&
          entry.extra?.['sidecar_agent'] === 'admin',
        JSON.stringify(entry ?? null),
      );
      step.facts['decision'] = call.decision_id;
    }
  } finally {
    ctx.say('restarting the router without the bug');
    await ctx.stack.restartRouter('');
    ctx.router.baseUrl = await ctx.stack.routerUrl();
  }
  return step.done();
}

const CATEGORY_TITLES: Readonly<Record<string, string>> = {
  admin_tool: 'admin tools over MCP',
  proxy: 'through the sidecar proxy',
  direct_egress: 'direct egress, no proxy',
  dns: 'DNS',
  other_role: 'other roles and the router, by name',
  by_address: 'other roles and services, by IP',
  sidecar_admin_api: "its own sidecar's admin API",
  control: 'control: allowed by policy',
};

/** Where a well-informed attacker would aim: the real addresses of other roles, the shared services and the router. */
export async function attackTargets(
  stack: ComposeStack,
): Promise<Array<{ label: string; host: string; port: number }>> {
  const targets: Array<{ label: string; host: string; port: number }> = [];
  for (const role of ['admin', 'support-agent'] as const) {
    const ip = (await stack.addresses(`${role}-sidecar`))[role];
    if (ip === undefined) continue;
    targets.push(
      { label: `${role}-sidecar`, host: ip, port: 15000 },
      { label: `${role}-admin-api`, host: ip, port: 15001 },
      { label: `${role}-agent`, host: ip, port: 8088 },
    );
  }
  for (const [service, port] of [
    ['helpdesk-tools', 8081],
    ['model-stub', 8080],
    ['status-service', 8080],
    ['router', 8000],
  ] as const) {
    const ip = (await stack.addresses(service))['basic-user'];
    if (ip !== undefined) targets.push({ label: service, host: ip, port });
  }
  return targets;
}

/** 5. The basic-user agent turns hostile (the `inject` switch): every way out or up is closed. */
export async function compromisedStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(5, 'A compromised agent is contained');
  const targets = await attackTargets(ctx.stack);
  const ada = await ctx.router.login('ada');
  ctx.say(
    `ada's chat with {"inject": true}: the basic-user agent acts prompt-injected (${targets.length} real addresses given)`,
  );
  const answer = await ctx.router.chat(ada.token, { inject: true, targets });
  const attempts = answer.agent.attempts ?? [];
  for (const [category, title] of Object.entries(CATEGORY_TITLES)) {
    const group = attempts.filter((a) => a.category === category);
    if (group.length === 0) continue;
    ctx.say(`${title}:`);
    for (const a of group) {
      const mark = a.reached ? (a.category === 'control' ? 'reached ' : 'GOT OUT ') : 'blocked ';
      ctx.say(
        `  ${mark} ${a.target.padEnd(48)} ${a.detail}${a.decision_id ? `  (decision ${short(a.decision_id)})` : ''}`,
      );
    }
  }
  const escaped = attempts.filter((a) => a.reached && a.category !== 'control');
  const control = attempts.find((a) => a.category === 'control');
  step.expect(
    `every attempt blocked (${attempts.length - 1} attempts)`,
    attempts.length > 10 && escaped.length === 0,
    escaped.map((a) => a.id).join(', '),
  );
  step.expect(
    'the allowed path still works (status page through the proxy: 200)',
    control?.reached === true && control.detail === 'HTTP 200',
    control?.detail,
  );
  for (const category of [
    'admin_tool',
    'proxy',
    'direct_egress',
    'dns',
    'other_role',
    'by_address',
    'sidecar_admin_api',
  ]) {
    step.expect(
      `tried: ${CATEGORY_TITLES[category]}`,
      attempts.some((a) => a.category === category),
    );
  }
  const toolIds = attempts.filter((a) => a.category === 'admin_tool').map((a) => a.decision_id ?? '');
  const entries = await auditEntries(ctx.stack, 'basic-user', toolIds);
  step.expect(
    'the admin tool attempts are in the basic-user audit as DENY',
    toolIds.length === 2 && entries.length === 2 && entries.every((e) => e.effect === 'DENY'),
    JSON.stringify(entries.map((e) => [e.action?.tool, e.effect])),
  );
  step.facts['attempts'] = attempts.length;
  return step.done();
}

/** 6. Every role's hash-chained audit log verifies (`agent-sidecar audit verify` in each sidecar). */
export async function auditVerifyStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(6, 'Every role’s audit chain verifies');
  for (const role of ROLES) {
    const r = await ctx.stack.sidecarCli(role, ['audit', 'verify', auditFile(role)]);
    const line = (r.stdout || r.stderr).trim();
    const m = /: ok: (\d+) entries, head ([0-9a-f]{12})/.exec(line);
    ctx.say(`${role.padEnd(14)} ${m ? `ok: ${m[1]} entries, head ${m[2]}…` : line}`);
    step.expect(`${role}: audit verify exit 0`, r.code === 0 && m !== null, line);
    step.facts[role] = m ? Number(m[1]) : null;
  }
  return step.done();
}

interface SpendFile {
  readonly agent: string;
  readonly models: Record<
    string,
    { requests: number; input_tokens: number; output_tokens: number; cost_usd: number }
  >;
}

/** 7. Spend per role, from each sidecar's model gateway (its spend file). */
export async function spendStep(ctx: DemoContext): Promise<StepResult> {
  const step = new Step(7, 'Spend per role');
  ctx.say(
    `${'role'.padEnd(14)} ${'model'.padEnd(18)} ${'calls'.padStart(5)} ${'input'.padStart(8)} ${'output'.padStart(7)} ${'USD'.padStart(10)}`,
  );
  for (const role of ROLES) {
    const r = await ctx.stack.exec(`${role}-sidecar`, ['cat', spendFile(role)], { user: '10001' });
    let spend: SpendFile | undefined;
    try {
      spend = JSON.parse(r.stdout) as SpendFile;
    } catch {
      spend = undefined;
    }
    const models = Object.entries(spend?.models ?? {});
    for (const [model, m] of models) {
      ctx.say(
        `${role.padEnd(14)} ${model.padEnd(18)} ${String(m.requests).padStart(5)} ${String(m.input_tokens).padStart(8)} ${String(m.output_tokens).padStart(7)} ${m.cost_usd.toFixed(6).padStart(10)}`,
      );
    }
    const requests = models.reduce((n, [, m]) => n + m.requests, 0);
    const cost = models.reduce((n, [, m]) => n + m.cost_usd, 0);
    step.expect(
      `${role}: model calls counted and priced in its own sidecar`,
      spend?.agent === role && requests > 0 && cost > 0,
      r.stdout.trim() || r.stderr.trim(),
    );
    step.facts[role] = { requests, cost_usd: cost };
  }
  return step.done();
}

export const STEPS = [
  knowledgeBaseStep,
  hiddenToolStep,
  approvedDeleteStep,
  misroutedStep,
  compromisedStep,
  auditVerifyStep,
  spendStep,
] as const;
