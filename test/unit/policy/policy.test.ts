// What the case tables cannot express: the tools/list filter, evaluation before DNS, hostile JS inputs, immutability.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compilePolicy, type Policy } from '../../../sidecar/policy/policy.ts';

function policy(text: string): Policy {
  const r = compilePolicy(text, 'inline.yaml');
  if (!r.ok) throw new Error(r.diagnostics.map((d) => d.message).join('\n'));
  return r.policy;
}
const shipped = (name: string) =>
  policy(readFileSync(new URL(`../../../policies/${name}.yaml`, import.meta.url), 'utf8'));

describe('mayExposeTool (the tools/list filter)', () => {
  it.for([
    ['basic-user', 'query_knowledge_base', true],
    ['basic-user', 'submit_ticket', true],
    ['basic-user', 'get_user_info', true],
    ['basic-user', 'delete_user', false],
    ['basic-user', 'list_all_tickets', false],
    ['basic-user', 'Query_Knowledge_Base', false],
    ['basic-user', '', false],
    ['support-agent', 'list_all_tickets', true],
    ['support-agent', 'delete_user', false],
    ['admin', 'delete_user', true],
    ['admin', 'list_all_tickets', true],
    ['admin', 'drop_database', false],
    ['research-agent', 'query_knowledge_base', false],
  ] as const)('%s: %s -> %s', ([name, tool, want]) => {
    expect(shipped(name).mayExposeTool(tool)).toBe(want);
  });

  const rules = (body: string) => policy(`agent: t\nrules:\n${body}`);

  it('an unconditional DENY before the ALLOW hides the tool', () => {
    const p = rules(
      '  - { name: d, action: tool_call, conditions: { tool: { equals: x } }, effect: DENY }\n' +
        '  - { name: a, action: tool_call, conditions: { tool: { equals: x } }, effect: ALLOW }\n',
    );
    expect(p.mayExposeTool('x')).toBe(false);
  });

  it('a DENY that depends on arguments does not hide the tool', () => {
    const p = rules(
      '  - { name: d, action: tool_call, conditions: { tool: { equals: x }, args.y: { equals: 1 } }, effect: DENY }\n' +
        '  - { name: a, action: tool_call, conditions: { tool: { equals: x } }, effect: ALLOW }\n',
    );
    expect(p.mayExposeTool('x')).toBe(true);
  });

  it('an approval rule exposes the tool', () => {
    const p = rules(
      '  - { name: r, action: tool_call, conditions: { tool: { in: [x, y] } }, effect: REQUIRE_APPROVAL }\n',
    );
    expect([p.mayExposeTool('x'), p.mayExposeTool('y'), p.mayExposeTool('z')]).toEqual([true, true, false]);
  });

  it('a rule without a tool condition exposes every tool, and a DENY without conditions hides every tool', () => {
    expect(rules('  - { name: a, action: tool_call, effect: ALLOW }\n').mayExposeTool('anything')).toBe(true);
    const p = rules(
      '  - { name: d, action: tool_call, effect: DENY }\n  - { name: a, action: tool_call, conditions: { tool: { equals: x } }, effect: ALLOW }\n',
    );
    expect(p.mayExposeTool('x')).toBe(false);
  });

  it('equals and in must both name the tool', () => {
    const p = rules(
      '  - { name: a, action: tool_call, conditions: { tool: { equals: x, in: [y] } }, effect: ALLOW }\n',
    );
    expect([p.mayExposeTool('x'), p.mayExposeTool('y')]).toEqual([false, false]);
  });

  it('rules of other action types never expose a tool', () => {
    expect(rules('  - { name: m, action: model, effect: ALLOW }\n').mayExposeTool('x')).toBe(false);
  });
});

describe('evaluation before DNS (addressesPending)', () => {
  const status = { type: 'network', method: 'GET', url: 'http://status.helpdesk.internal:8080/public' };

  it('address conditions count as satisfied, so the caller knows to resolve and evaluate again', () => {
    const p = shipped('basic-user');
    expect(p.evaluate(status, {}, { addressesPending: true })).toEqual({
      effect: 'ALLOW',
      rule: 'allow-public-status',
      reason: 'matched',
    });
    expect(p.evaluate(status, { addresses: ['93.184.216.34'] }).effect).toBe('DENY');
    expect(p.evaluate(status, { addresses: ['10.0.0.9'] }).effect).toBe('ALLOW');
  });

  it('a DENY on an address range cannot decide before DNS; it decides once the addresses are known', () => {
    const p = policy(
      'agent: t\nrules:\n  - { name: d, action: network, conditions: { address: { in_cidr: [169.254.0.0/16] } }, effect: DENY }\n' +
        '  - { name: a, action: network, conditions: { url: { starts_with: "https://x.example" } }, effect: ALLOW }\n',
    );
    const action = { type: 'network', url: 'https://x.example/' };
    expect(p.evaluate(action, {}, { addressesPending: true }).rule).toBe('a');
    expect(p.evaluate(action, { addresses: ['1.2.3.4'] }).rule).toBe('a');
    expect(p.evaluate(action, { addresses: ['169.254.169.254'] }).rule).toBe('d');
    // Without addresses and outside the pre-DNS pass, the range is unevaluable and the DENY holds.
    expect(p.evaluate(action).rule).toBe('d');
    // Nothing after it could allow another host: still a DENY before DNS, so that name is never looked up.
    expect(
      p.evaluate({ type: 'network', url: 'https://y.example/' }, {}, { addressesPending: true }),
    ).toEqual({
      effect: 'DENY',
      rule: null,
      reason: 'no_rule_matched',
    });
  });
});

describe('matching cost', () => {
  // Several `**` against a long agent-supplied host once backtracked exponentially (minutes for this case).
  it('a glob with many ** decides a long non-matching host at once', { timeout: 2000 }, () => {
    const p = policy(
      'agent: t\nrules:\n  - { name: g, action: network, conditions: { host: { glob: "**.**.**.**.**.**.**.**.x" } }, effect: ALLOW }\n',
    );
    const host = [...Array.from({ length: 150 }, () => 'a'), 'b'].join('.');
    expect(p.evaluate({ type: 'network', host }).effect).toBe('DENY');
    expect(p.evaluate({ type: 'network', host: `${host}.x` }).effect).toBe('ALLOW');
  });
});

describe('hostile inputs never throw', () => {
  const p = shipped('basic-user');
  const throwing = new Proxy(
    {},
    {
      get() {
        throw new Error('boom');
      },
      ownKeys() {
        throw new Error('boom');
      },
    },
  );
  const getter = { type: 'tool_call', tool: 'query_knowledge_base' } as Record<string, unknown>;
  Object.defineProperty(getter, 'args', {
    enumerable: true,
    get() {
      throw new Error('boom');
    },
  });
  const circular: Record<string, unknown> = { q: 1 };
  circular['self'] = circular;

  it.for([
    ['a throwing proxy', throwing],
    ['a throwing getter', getter],
    [
      'a class instance',
      new (class Action {
        type = 'tool_call';
        tool = 'query_knowledge_base';
      })(),
    ],
    ['a Map', new Map([['type', 'tool_call']])],
    ['a function', () => ({ type: 'tool_call' })],
    ['a symbol', Symbol('x')],
    ['a bigint', 10n],
    ['undefined', undefined],
    [
      'a null-prototype object',
      Object.assign(Object.create(null), { type: 'tool_call', tool: 'query_knowledge_base' }),
    ],
    ['circular args', { type: 'tool_call', tool: 'query_knowledge_base', args: circular }],
    ['bigint args', { type: 'tool_call', tool: 'submit_ticket', args: { priority: 1n } }],
    [
      'a prototype-polluted args object',
      { type: 'tool_call', tool: 'submit_ticket', args: Object.create({ priority: 'low' }) },
    ],
  ] as const)('%s', ([, input]) => {
    const d = p.evaluate(input);
    expect(['ALLOW', 'DENY']).toContain(d.effect);
    if (d.effect === 'ALLOW') expect(d.rule).toBe('allow-knowledge-base');
  });

  it('a null-prototype action is a plain JSON-like object', () => {
    const input = Object.assign(Object.create(null), { type: 'tool_call', tool: 'query_knowledge_base' });
    expect(p.evaluate(input).effect).toBe('ALLOW');
  });

  it('inherited fields never count', () => {
    const input = Object.create({ tool: 'query_knowledge_base' });
    input.type = 'tool_call';
    expect(p.evaluate(input)).toEqual({ effect: 'DENY', rule: null, reason: 'malformed_action' });
  });
});

describe('a compiled policy is frozen', () => {
  it('the policy, its rule list and each rule cannot be changed', () => {
    const p = shipped('admin');
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.rules)).toBe(true);
    for (const r of p.rules) {
      expect(Object.isFrozen(r)).toBe(true);
      expect(Object.isFrozen(r.conditions)).toBe(true);
    }
    expect(p.rule('delete-user-needs-approval')?.rateLimit).toEqual({ max: 5, per: 'hour' });
    expect(p.rule('no-such-rule')).toBeUndefined();
  });

  it('changing the action after a decision does not change the decision already made', () => {
    const p = shipped('basic-user');
    const action = { type: 'tool_call', tool: 'query_knowledge_base' };
    const d = p.evaluate(action);
    action.tool = 'delete_user';
    expect(d.effect).toBe('ALLOW');
    expect(p.evaluate(action).effect).toBe('DENY');
  });
});
