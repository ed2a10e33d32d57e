// The helpdesk sqlite layer on its own: deterministic seed, search, cascade, injected clock.
import { afterEach, describe, expect, it } from 'vitest';
import type { HelpdeskDb } from '../../../agents/helpdesk-tools/db.ts';
import { openHelpdeskDb } from '../../../agents/helpdesk-tools/db.ts';

let db: HelpdeskDb | undefined;
afterEach(() => {
  db?.close();
  db = undefined;
});

describe('openHelpdeskDb', () => {
  it('seeds the same demo data every time', () => {
    db = openHelpdeskDb();
    const other = openHelpdeskDb();
    try {
      expect(db.countUsers()).toBe(5);
      expect(db.listTickets()).toEqual(other.listTickets());
      expect(db.getUser('u-1001')).toEqual({
        id: 'u-1001',
        name: 'Ada Lovelace',
        email: 'ada@example.com',
        plan: 'pro',
      });
    } finally {
      other.close();
    }
  });

  it.each([
    ['password reset', 'kb-1'],
    ['billing invoice VAT', 'kb-3'],
    ['429 rate limit', 'kb-6'],
    ['REFUND', 'kb-4'],
  ])('search %j ranks %s first', (query, id) => {
    db = openHelpdeskDb();
    expect(db.searchKnowledgeBase(query)[0]?.id).toBe(id);
  });

  it('treats search input as data, not SQL or patterns', () => {
    db = openHelpdeskDb();
    expect(db.searchKnowledgeBase("%' OR 1=1 --")).toEqual([]);
    expect(db.searchKnowledgeBase('__')).toEqual([]);
  });

  it('stamps new tickets with the injected clock', () => {
    db = openHelpdeskDb(':memory:', { now: () => Date.UTC(2025, 5, 1) });
    const ticket = db.createTicket({ userId: 'u-1002', subject: 's', body: 'b', priority: 'normal' });
    expect(ticket).toMatchObject({
      user_id: 'u-1002',
      status: 'open',
      created_at: '2025-06-01T00:00:00.000Z',
    });
    expect(db.listTickets('open').at(-1)).toEqual(ticket);
  });

  it('deletes a user together with their tickets', () => {
    db = openHelpdeskDb();
    const before = db.countTickets();
    const owned = db.listTickets().filter((t) => t.user_id === 'u-1001').length;
    expect(db.deleteUser('u-1001')).toBe(true);
    expect(db.deleteUser('u-1001')).toBe(false);
    expect(db.countTickets()).toBe(before - owned);
  });
});
