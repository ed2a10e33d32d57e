// Tools the filter must see beyond plain named tools: Anthropic tools of a type the gateway does not know are removed
// (custom tools and known Anthropic tools are judged by name), and OpenAI's built-in web search, switched on by
// `web_search_options` outside `tools`, is judged as the tool `web_search`.
import { describe, expect, it } from 'vitest';
import { anthropic } from '../../../sidecar/model/anthropic.ts';
import { openai } from '../../../sidecar/model/openai.ts';
import type { JsonObject, ToolFilter, ToolsMode, VendorAdapter } from '../../../sidecar/model/vendor.ts';

const only =
  (...names: string[]) =>
  (name: string) =>
    names.includes(name);
const aTool = (name: string) => ({ name, input_schema: { type: 'object' } });
const oTool = (name: string) => ({ type: 'function', function: { name, parameters: { type: 'object' } } });

interface Case {
  readonly note: string;
  readonly vendor: VendorAdapter;
  readonly body: JsonObject;
  readonly mayExpose: (name: string) => boolean;
  readonly mode?: ToolsMode;
  /** The fields of filterTools' answer to check, exactly (a `body` of undefined: forwarded unchanged). */
  readonly expected: Partial<ToolFilter>;
}

const FUTURE = { type: 'future_server_tool_20991231', name: 'kb' };
const SEARCH = { search_context_size: 'high' };

const CASES: readonly Case[] = [
  {
    note: 'anthropic: a tool of a type the gateway does not know is removed, even under an allowed name',
    vendor: anthropic,
    body: { tools: [FUTURE, aTool('kb')] },
    mayExpose: only('kb'),
    expected: { before: ['', 'kb'], after: ['kb'], body: { tools: [aTool('kb')] } },
  },
  {
    note: 'anthropic: the same request is refused in reject mode',
    vendor: anthropic,
    body: { tools: [FUTURE, aTool('kb')] },
    mayExpose: only('kb'),
    mode: 'reject',
    expected: { refusal: 'tools_forbidden' },
  },
  {
    note: 'anthropic: a type that is not a string is unknown too',
    vendor: anthropic,
    body: {
      tools: [
        { ...aTool('kb'), type: 7 },
        { ...aTool('kb'), type: null },
      ],
    },
    mayExpose: only('kb'),
    expected: { after: [], body: {} },
  },
  {
    note: 'anthropic: custom tools (no type, or type custom) and known Anthropic tools are judged by name',
    vendor: anthropic,
    body: {
      tools: [
        aTool('kb'),
        { ...aTool('kb2'), type: 'custom' },
        { type: 'web_search_20250305', name: 'web_search' },
        { type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' },
        { type: 'bash_20250124', name: 'bash' },
      ],
    },
    mayExpose: only('kb', 'kb2', 'web_search', 'str_replace_based_edit_tool'),
    expected: {
      after: ['kb', 'kb2', 'web_search', 'str_replace_based_edit_tool'],
      body: {
        tools: [
          aTool('kb'),
          { ...aTool('kb2'), type: 'custom' },
          { type: 'web_search_20250305', name: 'web_search' },
          { type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' },
        ],
      },
    },
  },
  {
    note: 'anthropic: a later version of a known Anthropic tool is still that tool',
    vendor: anthropic,
    body: { tools: [{ type: 'web_search_20260101', name: 'web_search' }] },
    mayExpose: only('web_search'),
    expected: { before: ['web_search'], after: ['web_search'], body: undefined },
  },
  {
    note: 'openai: web_search_options is removed when web_search may not be exposed',
    vendor: openai,
    body: { tools: [oTool('kb')], web_search_options: SEARCH },
    mayExpose: only('kb'),
    expected: { before: ['kb', 'web_search'], after: ['kb'], body: { tools: [oTool('kb')] } },
  },
  {
    note: 'openai: web_search_options alone is removed too',
    vendor: openai,
    body: { web_search_options: {} },
    mayExpose: only('kb'),
    expected: { before: ['web_search'], after: [], body: {} },
  },
  {
    note: 'openai: web_search_options is refused in reject mode',
    vendor: openai,
    body: { tools: [oTool('kb')], web_search_options: SEARCH },
    mayExpose: only('kb'),
    mode: 'reject',
    expected: { refusal: 'tools_forbidden' },
  },
  {
    note: 'openai: web_search_options passes when web_search may be exposed',
    vendor: openai,
    body: { tools: [oTool('kb')], web_search_options: SEARCH },
    mayExpose: only('kb', 'web_search'),
    mode: 'reject',
    expected: {
      before: ['kb', 'web_search'],
      after: ['kb', 'web_search'],
      body: undefined,
      refusal: undefined,
    },
  },
  {
    note: 'openai: web_search_options: null turns nothing on',
    vendor: openai,
    body: { web_search_options: null },
    mayExpose: only('kb'),
    mode: 'reject',
    expected: { before: [], after: [], body: undefined, refusal: undefined },
  },
];

describe('tool types and built-in tools', () => {
  it.each(CASES)('$note', ({ vendor, body, mayExpose, mode, expected }) => {
    const r: Partial<ToolFilter> = vendor.filterTools(body, mayExpose, mode ?? 'strip');
    const got = Object.fromEntries(Object.keys(expected).map((k) => [k, r[k as keyof ToolFilter]]));
    expect(got).toEqual(expected);
  });
});
