// The demo helpdesk's data: a node:sqlite database (file or ':memory:'), its schema, seed data and queries.
import type { SQLOutputValue, StatementSync } from 'node:sqlite';
import { DatabaseSync } from 'node:sqlite';

export const TICKET_PRIORITIES = ['low', 'normal', 'high'] as const;
export type TicketPriority = (typeof TICKET_PRIORITIES)[number];
export const TICKET_STATUSES = ['open', 'pending', 'closed'] as const;
export type TicketStatus = (typeof TICKET_STATUSES)[number];

export interface User {
  readonly id: string;
  readonly name: string;
  readonly email: string;
  readonly plan: string;
}

export interface Ticket {
  readonly id: number;
  readonly user_id: string | null;
  readonly subject: string;
  readonly body: string;
  readonly priority: TicketPriority;
  readonly status: TicketStatus;
  readonly created_at: string;
}

export interface KbArticle {
  readonly id: string;
  readonly title: string;
  readonly body: string;
}

export interface NewTicket {
  readonly userId: string | null;
  readonly subject: string;
  readonly body: string;
  readonly priority: TicketPriority;
}

export interface HelpdeskDb {
  /** Articles containing any word of the query (3+ letters), best match first. */
  searchKnowledgeBase(query: string, limit?: number): KbArticle[];
  createTicket(ticket: NewTicket): Ticket;
  getUser(id: string): User | undefined;
  listTickets(status?: TicketStatus): Ticket[];
  /** Deletes the user and (by cascade) their tickets; false when there was no such user. */
  deleteUser(id: string): boolean;
  countUsers(): number;
  countTickets(): number;
  close(): void;
}

export interface HelpdeskDbOptions {
  /** Clock in milliseconds since the epoch, for new tickets' created_at. */
  readonly now?: () => number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  id    TEXT PRIMARY KEY,
  name  TEXT NOT NULL,
  email TEXT NOT NULL UNIQUE,
  plan  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
  id         INTEGER PRIMARY KEY,
  user_id    TEXT REFERENCES users(id) ON DELETE CASCADE,
  subject    TEXT NOT NULL,
  body       TEXT NOT NULL,
  priority   TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high')),
  status     TEXT NOT NULL CHECK (status IN ('open', 'pending', 'closed')),
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kb_articles (
  id    TEXT PRIMARY KEY,
  title TEXT NOT NULL,
  body  TEXT NOT NULL
);
`;

const SEED_USERS: readonly User[] = [
  { id: 'u-1001', name: 'Ada Lovelace', email: 'ada@example.com', plan: 'pro' },
  { id: 'u-1002', name: 'Grace Hopper', email: 'grace@example.com', plan: 'enterprise' },
  { id: 'u-1003', name: 'Alan Turing', email: 'alan@example.com', plan: 'free' },
  { id: 'u-1004', name: 'Katherine Johnson', email: 'katherine@example.com', plan: 'pro' },
  { id: 'u-1005', name: 'Edsger Dijkstra', email: 'edsger@example.com', plan: 'free' },
];

const SEED_TICKETS: readonly Omit<Ticket, 'id'>[] = [
  {
    user_id: 'u-1001',
    subject: 'Cannot reset my password',
    body: 'The reset link in the email says it has expired.',
    priority: 'high',
    status: 'open',
    created_at: '2025-01-06T09:12:00.000Z',
  },
  {
    user_id: 'u-1002',
    subject: 'Invoice shows the wrong VAT number',
    body: 'Our January invoice lists last year’s VAT number.',
    priority: 'normal',
    status: 'pending',
    created_at: '2025-01-07T14:30:00.000Z',
  },
  {
    user_id: 'u-1003',
    subject: 'How do I upgrade to pro?',
    body: 'I would like to move from the free plan.',
    priority: 'low',
    status: 'closed',
    created_at: '2025-01-08T08:05:00.000Z',
  },
  {
    user_id: 'u-1001',
    subject: 'Two-factor codes not arriving',
    body: 'SMS codes take more than ten minutes.',
    priority: 'normal',
    status: 'open',
    created_at: '2025-01-09T17:45:00.000Z',
  },
  {
    user_id: 'u-1004',
    subject: 'API returns 429',
    body: 'Our nightly sync hits the rate limit.',
    priority: 'high',
    status: 'open',
    created_at: '2025-01-10T02:20:00.000Z',
  },
];

const SEED_ARTICLES: readonly KbArticle[] = [
  {
    id: 'kb-1',
    title: 'Resetting your password',
    body: 'Use "Forgot password" on the sign-in page. Reset links expire after 30 minutes; request a new one if yours has expired.',
  },
  {
    id: 'kb-2',
    title: 'Setting up two-factor authentication',
    body: 'Enable two-factor authentication under Settings > Security. Authenticator apps are more reliable than SMS codes.',
  },
  {
    id: 'kb-3',
    title: 'Understanding your invoice',
    body: 'Invoices are issued on the first of each month. Billing details such as the VAT number can be changed under Settings > Billing.',
  },
  {
    id: 'kb-4',
    title: 'Refund policy',
    body: 'Annual plans can be refunded pro rata within 30 days. Monthly billing is not refunded.',
  },
  {
    id: 'kb-5',
    title: 'Changing your plan',
    body: 'Upgrade or downgrade between free, pro and enterprise under Settings > Plan. Changes apply to the next billing cycle.',
  },
  {
    id: 'kb-6',
    title: 'API rate limits',
    body: 'The API allows 100 requests per minute per key; a 429 response means the limit was reached. Back off and retry.',
  },
];

const MAX_QUERY_WORDS = 8;

export function openHelpdeskDb(path = ':memory:', opts: HelpdeskDbOptions = {}): HelpdeskDb {
  const now = opts.now ?? Date.now;
  const db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
  db.exec(SCHEMA);

  const s = {
    countUsers: db.prepare('SELECT count(*) AS n FROM users'),
    countTickets: db.prepare('SELECT count(*) AS n FROM tickets'),
    insertUser: db.prepare('INSERT INTO users (id, name, email, plan) VALUES (?, ?, ?, ?)'),
    insertTicket: db.prepare(
      'INSERT INTO tickets (user_id, subject, body, priority, status, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *',
    ),
    insertArticle: db.prepare('INSERT INTO kb_articles (id, title, body) VALUES (?, ?, ?)'),
    searchArticles: db.prepare(
      "SELECT id, title, body FROM kb_articles WHERE instr(lower(title || ' ' || body), ?) > 0 ORDER BY id",
    ),
    getUser: db.prepare('SELECT id, name, email, plan FROM users WHERE id = ?'),
    listTickets: db.prepare('SELECT * FROM tickets ORDER BY id'),
    listTicketsByStatus: db.prepare('SELECT * FROM tickets WHERE status = ? ORDER BY id'),
    deleteUser: db.prepare('DELETE FROM users WHERE id = ?'),
  } satisfies Record<string, StatementSync>;

  if (count(s.countUsers) === 0) {
    transaction(db, () => {
      for (const u of SEED_USERS) s.insertUser.run(u.id, u.name, u.email, u.plan);
      for (const t of SEED_TICKETS) {
        s.insertTicket.get(t.user_id, t.subject, t.body, t.priority, t.status, t.created_at);
      }
      for (const a of SEED_ARTICLES) s.insertArticle.run(a.id, a.title, a.body);
    });
  }

  return {
    searchKnowledgeBase(query, limit = 5) {
      const words = [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) ?? [])].slice(
        0,
        MAX_QUERY_WORDS,
      );
      const hits = new Map<string, { article: KbArticle; score: number }>();
      for (const word of words) {
        for (const row of s.searchArticles.all(word)) {
          const article = toArticle(row);
          const hit = hits.get(article.id) ?? { article, score: 0 };
          hit.score += 1;
          hits.set(article.id, hit);
        }
      }
      return [...hits.values()]
        .sort((a, b) => b.score - a.score || a.article.id.localeCompare(b.article.id))
        .slice(0, limit)
        .map((h) => h.article);
    },
    createTicket(t) {
      const createdAt = new Date(now()).toISOString();
      const row = s.insertTicket.get(t.userId, t.subject, t.body, t.priority, 'open', createdAt);
      if (row === undefined) throw new Error('insert returned no row');
      return toTicket(row);
    },
    getUser(id) {
      const row = s.getUser.get(id);
      return row === undefined ? undefined : toUser(row);
    },
    listTickets(status) {
      const rows = status === undefined ? s.listTickets.all() : s.listTicketsByStatus.all(status);
      return rows.map(toTicket);
    },
    deleteUser(id) {
      return Number(s.deleteUser.run(id).changes) > 0;
    },
    countUsers: () => count(s.countUsers),
    countTickets: () => count(s.countTickets),
    close: () => db.close(),
  };
}

function transaction(db: DatabaseSync, work: () => void): void {
  db.exec('BEGIN');
  try {
    work();
    db.exec('COMMIT');
  } catch (err) {
    db.exec('ROLLBACK');
    throw err;
  }
}

type Row = Record<string, SQLOutputValue>;

function count(statement: StatementSync): number {
  return Number(statement.get()?.['n'] ?? 0);
}

function text(row: Row, column: string): string {
  const value = row[column];
  if (typeof value !== 'string') throw new TypeError(`column ${column}: expected text`);
  return value;
}

function toUser(row: Row): User {
  return { id: text(row, 'id'), name: text(row, 'name'), email: text(row, 'email'), plan: text(row, 'plan') };
}

function toArticle(row: Row): KbArticle {
  return { id: text(row, 'id'), title: text(row, 'title'), body: text(row, 'body') };
}

function toTicket(row: Row): Ticket {
  const userId = row['user_id'];
  return {
    id: Number(row['id']),
    user_id: typeof userId === 'string' ? userId : null,
    subject: text(row, 'subject'),
    body: text(row, 'body'),
    priority: text(row, 'priority') as TicketPriority,
    status: text(row, 'status') as TicketStatus,
    created_at: text(row, 'created_at'),
  };
}
