// Per-process garbage-collection statistics for any benchmark, as a preload:
//   NODE_OPTIONS="--import ./bench/gc-stats.ts" node bench/run.ts model
// Every Node process of the run (the client, upstreams, forwarders, sidecars) prints one line at exit to stderr, or
// writes it to $GC_STATS_DIR/<pid>.txt when that is set (for children whose stderr a benchmark discards): its
// scavenges (young-generation collections) and their mean pause, how much the old generation grew per scavenge
// (median: what was promoted), and its mark-compacts. A process that promotes most of what it allocates pauses
// longer and more often, and those pauses land in whichever samples are in flight.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

const SCAVENGE = 1; // PerformanceEntry detail.kind of a minor GC (perf_hooks constants.NODE_PERFORMANCE_GC_MINOR)
const scavenges: number[] = [];
const growth: number[] = [];
const majors: number[] = [];
const oldSpaceUsed = () =>
  getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;
let before = oldSpaceUsed();
let afterMajor = false;

new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
    const now = oldSpaceUsed();
    if (kind === SCAVENGE) {
      scavenges.push(e.duration);
      // Growth across a mark-compact says nothing about promotion: that interval is skipped.
      if (!afterMajor) growth.push(now - before);
      afterMajor = false;
    } else {
      majors.push(e.duration);
      afterMajor = true;
    }
    before = now;
  }
}).observe({ entryTypes: ['gc'] });

const mean = (a: number[]) => (a.length === 0 ? 0 : a.reduce((x, y) => x + y, 0) / a.length);
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1] ?? 0;

process.on('exit', () => {
  const role = Object.entries(process.env).find(([k]) => k.endsWith('_BENCH_ROLE'))?.[1] ?? 'main';
  const line =
    `gc-stats pid ${process.pid} (${role}): ${scavenges.length} scavenges, mean pause ${mean(scavenges).toFixed(2)} ms, ` +
    `old generation +${(median(growth) / 1024).toFixed(0)} KiB per scavenge (median); ` +
    `${majors.length} mark-compacts, mean ${mean(majors).toFixed(2)} ms\n`;
  const dir = process.env['GC_STATS_DIR'];
  if (dir) writeFileSync(join(dir, `${process.pid}.txt`), line);
  else process.stderr.write(line);
});
