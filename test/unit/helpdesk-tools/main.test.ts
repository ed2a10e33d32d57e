// The helpdesk entry point as a real process: env configuration, its one log line, SIGTERM shutdown.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateRoleKeyPair, publicKeyFileName } from '../../../sidecar/identity/keys.ts';

const MAIN = join(import.meta.dirname, '../../../agents/helpdesk-tools/main.ts');

let dir: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'helpdesk-main-'));
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function start(env: Record<string, string>): {
  child: ChildProcess;
  firstLine: Promise<Record<string, unknown>>;
} {
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env['PATH'] ?? '', HELPDESK_HOST: '127.0.0.1', HELPDESK_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const firstLine = once(lines, 'line').then(
    ([line]) => JSON.parse(line as string) as Record<string, unknown>,
  );
  return { child, firstLine };
}

describe('helpdesk-tools main', () => {
  it('starts from env, logs one line with its URL, serves MCP, and exits 0 on SIGTERM', async () => {
    for (const role of ['basic-user', 'admin']) {
      await writeFile(
        join(dir, publicKeyFileName(role)),
        JSON.stringify((await generateRoleKeyPair()).publicJwk),
      );
    }
    const { child, firstLine } = start({ HELPDESK_KEYS: dir });
    const line = await firstLine;
    expect(line).toMatchObject({
      msg: 'helpdesk tool server listening',
      requireContext: true,
      roles: ['admin', 'basic-user'],
      db: ':memory:',
    });
    const client = new Client({ name: 'main-test', version: '0.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(line['url'] as string)));
    expect((await client.listTools()).tools).toHaveLength(5);
    const refused = await client.callTool({ name: 'list_all_tickets', arguments: {} });
    expect(refused.isError).toBe(true);
    await client.close();
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    expect((await exited)[0]).toBe(0);
  });

  it('refuses to start without keys while context is required', async () => {
    const { child, firstLine } = start({});
    const exited = once(child, 'exit');
    expect(await firstLine).toMatchObject({ level: 50, msg: 'helpdesk tool server failed to start' });
    expect((await exited)[0]).toBe(1);
  });

  it('starts without keys when context is explicitly not required', async () => {
    const { child, firstLine } = start({ HELPDESK_REQUIRE_CONTEXT: 'false' });
    expect(await firstLine).toMatchObject({ requireContext: false, roles: [] });
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    expect((await exited)[0]).toBe(0);
  });

  it('refuses a private key where the public keys should be', async () => {
    const pair = await generateRoleKeyPair();
    await writeFile(join(dir, 'admin.private.jwk.json'), JSON.stringify(pair.privateJwk));
    const { child, firstLine } = start({ HELPDESK_KEYS: dir });
    const exited = once(child, 'exit');
    expect(await firstLine).toMatchObject({
      detail: expect.stringMatching(/private key in a public key location/),
    });
    expect((await exited)[0]).toBe(1);
  });
});
