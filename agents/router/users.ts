// The demo's user directory: who may sign in to the helpdesk, under which subject, and with which role.

export const HELPDESK_ROLES = ['basic-user', 'support-agent', 'admin'] as const;
export type HelpdeskRole = (typeof HELPDESK_ROLES)[number];

export function isHelpdeskRole(value: unknown): value is HelpdeskRole {
  return typeof value === 'string' && (HELPDESK_ROLES as readonly string[]).includes(value);
}

export interface DemoUser {
  /** What `POST /login {"user": …}` takes. */
  readonly login: string;
  /** The token's `sub`: customers are the helpdesk database's seeded users (agents/helpdesk-tools/db.ts). */
  readonly sub: string;
  readonly name: string;
  readonly role: HelpdeskRole;
}

/**
 * Customers are seeded users of the helpdesk database, so their tickets and profile are theirs. Staff are not
 * customers; admin subjects start with `admin-`, which the admin policy's `never-delete-admins` rule protects.
 */
export const DEMO_USERS: readonly DemoUser[] = Object.freeze([
  { login: 'ada', sub: 'u-1001', name: 'Ada Lovelace', role: 'basic-user' },
  { login: 'alan', sub: 'u-1003', name: 'Alan Turing', role: 'basic-user' },
  { login: 'sam', sub: 'staff-2001', name: 'Sam Support', role: 'support-agent' },
  { login: 'max', sub: 'admin-3001', name: 'Max Admin', role: 'admin' },
]);

export function findDemoUser(login: string, users: readonly DemoUser[] = DEMO_USERS): DemoUser | undefined {
  return users.find((u) => u.login === login);
}
