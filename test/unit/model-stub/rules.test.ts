// The model stub's deterministic rules as a table: which reply a turn gets, and how arguments and tokens are counted.

import { describe, expect, it } from 'vitest';
import {
  countInputTokens,
  countOutputTokens,
  decideReply,
  type OfferedTool,
  type Reply,
  type ToolChoice,
  type Turn,
} from '../../../agents/model-stub/server.ts';

const weather: OfferedTool = {
  name: 'get_weather',
  properties: {
    city: { type: 'string' },
    days: { type: 'integer' },
    zip: { type: 'string' },
    metric: { type: 'boolean' },
  },
};
const search: OfferedTool = {
  name: 'search',
  properties: { q: { type: 'string' }, limit: { type: 'number' } },
};
const get: OfferedTool = { name: 'get', properties: undefined };
const fs: OfferedTool = { name: 'fs', properties: undefined };
const fsRead: OfferedTool = { name: 'fs.read', properties: undefined };
const auto: ToolChoice = { mode: 'auto' };

interface Case {
  readonly note: string;
  readonly turn: Partial<Turn>;
  readonly want: Reply;
}

const cases: readonly Case[] = [
  {
    note: 'no tools: echoes the first 80 characters',
    turn: { userText: `${'a'.repeat(80)}TRUNCATED` },
    want: { kind: 'text', text: `Stub reply: ${'a'.repeat(80)}` },
  },
  {
    note: 'a tool named in the text is called, arguments restricted to its schema',
    turn: { userText: 'please get_weather city=Paris days=3 unit=C', tools: [search, weather] },
    want: { kind: 'tool_call', name: 'get_weather', input: { city: 'Paris', days: 3 } },
  },
  {
    note: 'a tool name must appear as a whole word',
    turn: { userText: 'research this', tools: [search] },
    want: { kind: 'text', text: 'Stub reply: research this' },
  },
  {
    note: 'the earliest named tool wins',
    turn: { userText: 'search or get_weather', tools: [weather, get, search] },
    want: { kind: 'tool_call', name: 'search', input: {} },
  },
  {
    note: 'a longer name wins a tie at the same position',
    turn: { userText: 'fs.read path=/etc/hosts', tools: [fs, fsRead] },
    want: { kind: 'tool_call', name: 'fs.read', input: { path: '/etc/hosts' } },
  },
  {
    note: 'without a schema every pair is kept; numbers become numbers, quotes keep strings',
    turn: {
      userText: 'get id=42 ratio=-1.5e2 name=\'Ada Lovelace\' code="7" path=/tmp/a.txt, n=3.',
      tools: [get],
    },
    want: {
      kind: 'tool_call',
      name: 'get',
      input: { id: 42, ratio: -150, name: 'Ada Lovelace', code: '7', path: '/tmp/a.txt', n: 3 },
    },
  },
  {
    note: 'schema types: string keeps digits, boolean parses true/false',
    turn: { userText: 'get_weather zip=01234 metric=true', tools: [weather] },
    want: { kind: 'tool_call', name: 'get_weather', input: { zip: '01234', metric: true } },
  },
  {
    note: 'tool_choice naming a tool forces it even when the text names another',
    turn: {
      userText: 'get_weather q=cats',
      tools: [weather, search],
      toolChoice: { mode: 'tool', name: 'search' },
    },
    want: { kind: 'tool_call', name: 'search', input: { q: 'cats' } },
  },
  {
    note: 'tool_choice any calls the named tool, else the first offered',
    turn: { userText: 'hello', tools: [search, weather], toolChoice: { mode: 'any' } },
    want: { kind: 'tool_call', name: 'search', input: {} },
  },
  {
    note: 'tool_choice none never calls a tool',
    turn: { userText: 'search q=x', tools: [search], toolChoice: { mode: 'none' } },
    want: { kind: 'text', text: 'Stub reply: search q=x' },
  },
  {
    note: 'tool results are acknowledged with their first 200 characters',
    turn: { userText: 'search q=x', toolResult: `${'r'.repeat(200)}MORE`, tools: [search] },
    want: { kind: 'text', text: `Tool result: ${'r'.repeat(200)}` },
  },
  {
    note: 'a forced tool wins over tool results',
    turn: { userText: '', toolResult: 'done', tools: [search], toolChoice: { mode: 'tool', name: 'search' } },
    want: { kind: 'tool_call', name: 'search', input: {} },
  },
  {
    note: 'truncation counts code points, never splitting a surrogate pair',
    turn: { userText: '😀'.repeat(81) },
    want: { kind: 'text', text: `Stub reply: ${'😀'.repeat(80)}` },
  },
];

describe('decideReply', () => {
  it.each(cases)('$note', ({ turn, want }) => {
    expect(
      decideReply({ userText: '', toolResult: undefined, tools: [], toolChoice: auto, ...turn }),
    ).toEqual(want);
  });
});

describe('token accounting', () => {
  it('counts input as ceil(JSON length of messages + system + tools / 4)', () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const tools = [{ name: 'x' }];
    const length =
      JSON.stringify(messages).length + JSON.stringify('sys').length + JSON.stringify(tools).length;
    expect(countInputTokens({ model: 'm', messages, system: 'sys', tools, max_tokens: 5 })).toBe(
      Math.ceil(length / 4),
    );
    expect(countInputTokens({ messages })).toBe(Math.ceil(JSON.stringify(messages).length / 4));
  });

  it('counts output as ceil(text or argument JSON length / 4)', () => {
    expect(countOutputTokens({ kind: 'text', text: '12345' })).toBe(2);
    expect(countOutputTokens({ kind: 'tool_call', name: 'f', input: { a: 1 } })).toBe(2);
  });
});
