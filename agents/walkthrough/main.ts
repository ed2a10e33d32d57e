// `npm run demo:walkthrough`: brings the helpdesk demo up (or reuses it), runs the seven steps, prints each with its
// outcome, and exits 1 if any expected outcome did not hold (2 on usage errors, 3 when the stack cannot start).
import { parseArgs } from 'node:util';
import { bringUp, type Output } from './bring-up.ts';
import { ANTHROPIC_FILE, ComposeStack, DEFAULT_PROJECT, DEMO_FILE } from './compose-stack.ts';
import { RouterClient } from './router-client.ts';
import { type DemoContext, STEPS, type StepResult } from './steps.ts';

const USAGE = `usage: node agents/walkthrough/main.ts [options]

  --project <name>   compose project (default ${DEFAULT_PROJECT}, the name in ${DEMO_FILE})
  --no-build         do not build images; start from the ones already built
  --anthropic        add ${ANTHROPIC_FILE} (the real API; needs ANTHROPIC_API_KEY)
  --down             remove the stack (containers, networks, volumes) at the end
  -h, --help         this text`;

const tty = process.stdout.isTTY === true;
const paint = (code: string, text: string) => (tty ? `\x1b[${code}m${text}\x1b[0m` : text);
const green = (t: string) => paint('32', t);
const red = (t: string) => paint('31', t);
const bold = (t: string) => paint('1', t);
const dim = (t: string) => paint('2', t);

const output: Output = {
  // On a terminal a line first clears the spinner's status line, which it then replaces.
  line: (text) => process.stdout.write(`${tty ? '\r\x1b[2K' : ''}${text}\n`),
  ...(tty
    ? {
        status: (text: string | undefined) =>
          process.stdout.write(
            text === undefined
              ? '\r\x1b[2K'
              : `\r\x1b[2K${text.slice(0, (process.stdout.columns || 100) - 1)}`,
          ),
      }
    : {}),
};

function printStep(result: StepResult, lines: readonly string[]): void {
  for (const line of lines) output.line(`    ${dim('│')} ${line}`);
  for (const check of result.checks) {
    const mark = check.ok ? green('✔') : red('✘');
    output.line(
      `    ${mark} ${check.what}${!check.ok && check.detail ? dim(`  (saw: ${check.detail.slice(0, 300)})`) : ''}`,
    );
  }
}

async function main(): Promise<number> {
  let values: { project?: string; 'no-build'?: boolean; anthropic?: boolean; down?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        project: { type: 'string' },
        'no-build': { type: 'boolean' },
        anthropic: { type: 'boolean' },
        down: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    output.line(USAGE);
    return 0;
  }
  if (values.anthropic && !process.env['ANTHROPIC_API_KEY']) {
    process.stderr.write('--anthropic needs ANTHROPIC_API_KEY in the environment\n');
    return 2;
  }
  const stack = new ComposeStack({
    ...(values.project ? { project: values.project } : {}),
    files: values.anthropic ? [DEMO_FILE, ANTHROPIC_FILE] : [DEMO_FILE],
  });
  output.line(bold('agent-sidecar helpdesk demo: three roles, three sidecars, one router'));
  try {
    await bringUp(stack, output, { build: !values['no-build'] });
  } catch (err) {
    output.line(red(`✘ ${(err as Error).message}`));
    return 3;
  }
  const router = new RouterClient(await stack.routerUrl());
  output.line(`Router: ${router.baseUrl}`);

  const results: StepResult[] = [];
  for (const stepFn of STEPS) {
    const lines: string[] = [];
    const ctx: DemoContext = { stack, router, say: (line) => lines.push(line) };
    const started = performance.now();
    let result: StepResult;
    try {
      result = await stepFn(ctx);
    } catch (err) {
      result = {
        number: results.length + 1,
        title: stepFn.name,
        checks: [{ what: 'the step ran to the end', ok: false, detail: (err as Error).message }],
        ok: false,
        facts: {},
      };
    }
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    output.line('');
    output.line(
      `${result.ok ? green('✔') : red('✘')} ${bold(`${result.number}. ${result.title}`)} ${dim(`(${secs}s)`)}`,
    );
    printStep(result, lines);
    results.push(result);
  }

  const failed = results.filter((r) => !r.ok);
  output.line('');
  output.line(
    failed.length === 0
      ? green(`All ${results.length} steps went as expected.`)
      : red(
          `${failed.length} of ${results.length} steps did not: ${failed.map((r) => r.number).join(', ')}.`,
        ),
  );
  const downCommand = `docker compose -p ${stack.project} -f ${stack.files.join(' -f ')} down -v`;
  output.line(
    dim(values.down ? 'Removing the stack.' : `The stack is still running; remove it with: ${downCommand}`),
  );
  if (values.down) await stack.down();
  return failed.length === 0 ? 0 : 1;
}

process.exitCode = await main();
