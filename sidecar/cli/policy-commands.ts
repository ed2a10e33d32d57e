// `policy check|test|schema` and `eval`: the policy engine from the command line.
import { createReadStream } from 'node:fs';
import { Command } from 'commander';
import { formatDiagnostic } from '../policy/load.ts';
import { runPolicyTests } from '../policy/policy-tests.ts';
import { policyJsonSchema } from '../policy/schema.ts';
import { expandPaths, isPolicyFile, isTestFile, loadPolicyTestFile, tryLoadPolicy } from '../policy-file.ts';
import { textLines } from '../text-lines.ts';
import { type CliIo, EXIT } from './io.ts';

export function policyCommand(io: CliIo): Command {
  const policy = new Command('policy').description('validate, test and describe policy files');

  policy
    .command('check')
    .description('validate policy files; prints file:line:col: message for every problem')
    .argument(
      '<paths...>',
      'policy files or directories (*.yaml, *.yml; *.test.yaml are skipped in directories)',
    )
    .action(async (paths: string[]) => {
      const files = await expandPaths(paths, isPolicyFile);
      if (files.length === 0) return io.fail(EXIT.usage, 'no policy files found');
      let bad = 0;
      for (const file of files) {
        const r = await tryLoadPolicy(file);
        if (r.ok) io.out(`ok ${file} (agent ${r.policy.agent}, ${r.policy.rules.length} rules)`);
        else {
          bad++;
          for (const d of r.diagnostics) io.err(formatDiagnostic(d));
        }
      }
      io.setExit(bad > 0 ? EXIT.usage : EXIT.ok);
    });

  policy
    .command('test')
    .description('run policy test cases (*.test.yaml); exits 1 when any case fails')
    .argument('<paths...>', 'test files or directories')
    .action(async (paths: string[]) => {
      const files = await expandPaths(paths, isTestFile);
      if (files.length === 0) return io.fail(EXIT.usage, 'no policy test files (*.test.yaml) found');
      let passed = 0;
      let failed = 0;
      let broken = 0;
      for (const file of files) {
        const t = await loadPolicyTestFile(file);
        if (!t.ok) {
          broken++;
          for (const d of t.diagnostics) io.err(formatDiagnostic(d));
          continue;
        }
        const p = await tryLoadPolicy(t.policyPath);
        if (!p.ok) {
          broken++;
          for (const d of p.diagnostics) io.err(formatDiagnostic(d));
          continue;
        }
        const results = runPolicyTests(p.policy, t.tests);
        const fails = results.filter((r) => !r.pass);
        passed += results.length - fails.length;
        failed += fails.length;
        io.out(`${fails.length === 0 ? 'PASS' : 'FAIL'} ${file} (${results.length} cases)`);
        for (const f of fails) {
          io.out(`  - ${f.note}\n      want ${JSON.stringify(f.want)}\n      got  ${JSON.stringify(f.got)}`);
        }
      }
      io.out(`policy tests: ${passed} passed, ${failed} failed${broken ? `, ${broken} files invalid` : ''}`);
      io.setExit(broken > 0 ? EXIT.usage : failed > 0 ? EXIT.failure : EXIT.ok);
    });

  policy
    .command('schema')
    .description('print the policy JSON Schema (draft 2020-12)')
    .action(() => io.out(JSON.stringify(policyJsonSchema(), null, 2)));

  return policy;
}

export function evalCommand(io: CliIo): Command {
  return new Command('eval')
    .description('evaluate actions against a policy; prints one JSON decision per action, in input order')
    .requiredOption('--policy <file>', 'policy file')
    .option('--action <json>', 'one action as JSON')
    .option('--actions <file>', 'JSON Lines file of actions, or - for stdin')
    .action(async (opts: { policy: string; action?: string; actions?: string }) => {
      if ((opts.action === undefined) === (opts.actions === undefined)) {
        return io.fail(EXIT.usage, 'give exactly one of --action or --actions');
      }
      const loaded = await tryLoadPolicy(opts.policy);
      if (!loaded.ok) {
        for (const d of loaded.diagnostics) io.err(formatDiagnostic(d));
        return io.setExit(EXIT.usage);
      }
      const policy = loaded.policy;
      const answer = (line: string) => {
        let action: unknown;
        try {
          action = JSON.parse(line);
        } catch {
          return io.out(JSON.stringify({ effect: 'DENY', rule: null, reason: 'malformed_action' }));
        }
        const d = policy.evaluate(action);
        io.out(JSON.stringify({ effect: d.effect, rule: d.rule, reason: d.reason }));
      };
      if (opts.action !== undefined) {
        answer(opts.action);
        return io.setExit(EXIT.ok);
      }
      const input = opts.actions === '-' ? io.stdin : createReadStream(opts.actions as string);
      try {
        // Line feeds only (CRLF tolerated): an action holding U+2028 is one line, as JSONL means it.
        for await (const raw of textLines(input)) {
          const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
          if (line.trim() !== '') answer(line);
        }
      } catch (err) {
        return io.fail(
          EXIT.usage,
          `cannot read ${opts.actions}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        );
      }
      io.setExit(EXIT.ok);
    });
}
