// The walkthrough's logic without Docker: when the stack counts as up, what a state change is, and that the
// misroute step always puts the router back.
import { describe, expect, it } from 'vitest';
import {
  DEMO_SERVICES,
  failedServices,
  stackReady,
  stateChanges,
} from '../../../agents/walkthrough/bring-up.ts';
import {
  type ComposeStack,
  describeState,
  type ServiceState,
} from '../../../agents/walkthrough/compose-stack.ts';
import type { RouterClient } from '../../../agents/walkthrough/router-client.ts';
import { MISROUTE, misroutedStep, short } from '../../../agents/walkthrough/steps.ts';

const svc = (service: string, state: string, health = '', exitCode = 0): ServiceState => ({
  service,
  state,
  health,
  exitCode,
});

const allUp = (): ServiceState[] =>
  DEMO_SERVICES.map((s) => (s.endsWith('-keys') ? svc(s, 'exited') : svc(s, 'running', 'healthy')));

describe('stackReady', () => {
  it('is true when every service runs healthy and the key jobs exited 0', () => {
    expect(stackReady(allUp(), DEMO_SERVICES)).toBe(true);
  });

  it.each([
    ['a service is missing', (s: ServiceState[]) => s.filter((x) => x.service !== 'router')],
    [
      'a sidecar is still starting',
      (s: ServiceState[]) =>
        s.map((x) => (x.service === 'admin-sidecar' ? svc(x.service, 'running', 'starting') : x)),
    ],
    [
      'a key job failed',
      (s: ServiceState[]) =>
        s.map((x) => (x.service === 'issuer-keys' ? svc(x.service, 'exited', '', 1) : x)),
    ],
    [
      'a long-running service exited 0',
      (s: ServiceState[]) => s.map((x) => (x.service === 'router' ? svc(x.service, 'exited') : x)),
    ],
  ])('is false when %s', (_name, change) => {
    expect(stackReady(change(allUp()), DEMO_SERVICES)).toBe(false);
  });

  it('names the services that can never become ready', () => {
    const s = [
      svc('issuer-keys', 'exited'),
      svc('identity-keys', 'exited', '', 2),
      svc('router', 'running', 'unhealthy'),
    ];
    expect(failedServices(s).map((x) => x.service)).toEqual(['identity-keys', 'router']);
  });
});

describe('state changes', () => {
  it('reports new services and changed states once', () => {
    const seen = new Map([['router', 'running (starting)']]);
    const now = [
      svc('router', 'running', 'healthy'),
      svc('model-stub', 'created'),
      svc('issuer-keys', 'exited', '', 0),
    ];
    expect(stateChanges(seen, now)).toEqual([
      { service: 'router', from: 'running (starting)', to: 'running (healthy)' },
      { service: 'model-stub', from: undefined, to: 'created' },
      { service: 'issuer-keys', from: undefined, to: 'exited (0)' },
    ]);
    expect(stateChanges(new Map([['model-stub', 'created']]), [svc('model-stub', 'created')])).toEqual([]);
    expect(describeState(svc('x', 'running'))).toBe('running');
  });
});

describe('the misroute step', () => {
  it('restores the router without the bug even when the chat fails', async () => {
    const restarts: string[] = [];
    const stack = {
      restartRouter: async (misroute: string) => void restarts.push(misroute),
      routerUrl: async () => 'http://127.0.0.1:1',
    } as unknown as ComposeStack;
    const router = {
      baseUrl: '',
      login: async () => {
        throw new Error('router down');
      },
    } as unknown as RouterClient;
    await expect(misroutedStep({ stack, router, say: () => undefined })).rejects.toThrow('router down');
    expect(restarts).toEqual([MISROUTE, '']);
  });

  it('shortens decision ids for reading only', () => {
    expect(short('1ed093b0-3b6c-4115-af1c-91b7b064ca01')).toBe('1ed093b0');
    expect(short(null)).toBe('—');
  });
});
