// Turns untrusted JSON from an agent into a typed Action, or says why it is malformed.
import { ACTION_TYPES, type Action, type ActionType } from './types.ts';

export type ParsedAction =
  | { readonly ok: true; readonly action: Action }
  | { readonly ok: false; readonly reason: 'malformed_action' | 'unknown_action_type'; readonly why: string };

const STRING_FIELDS = ['agent', 'path', 'command', 'url', 'method', 'host', 'tool', 'model'] as const;
// `addresses` and `claims` are deliberately absent: they come from the sidecar (DNS, verified tokens), never from the agent.
const ALLOWED_FIELDS = new Set<string>(['type', ...STRING_FIELDS, 'argv', 'args']);

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function parseAction(input: unknown): ParsedAction {
  if (!isPlainObject(input))
    return { ok: false, reason: 'malformed_action', why: 'action is not a JSON object' };
  const type = input['type'];
  if (typeof type !== 'string')
    return { ok: false, reason: 'malformed_action', why: '`type` must be a string' };
  if (!(ACTION_TYPES as readonly string[]).includes(type)) {
    return { ok: false, reason: 'unknown_action_type', why: 'unknown action type' };
  }
  for (const key of Object.keys(input)) {
    if (!ALLOWED_FIELDS.has(key))
      return { ok: false, reason: 'malformed_action', why: `unknown field "${key}"` };
  }
  for (const f of STRING_FIELDS) {
    if (f in input && typeof input[f] !== 'string') {
      return { ok: false, reason: 'malformed_action', why: `\`${f}\` must be a string` };
    }
  }
  if ('argv' in input) {
    const argv = input['argv'];
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string')) {
      return { ok: false, reason: 'malformed_action', why: '`argv` must be a non-empty array of strings' };
    }
    if ('command' in input)
      return { ok: false, reason: 'malformed_action', why: 'give `command` or `argv`, not both' };
  }
  if ('args' in input && !isPlainObject(input['args'])) {
    return { ok: false, reason: 'malformed_action', why: '`args` must be a JSON object' };
  }
  return { ok: true, action: { ...(input as object), type: type as ActionType } as Action };
}
