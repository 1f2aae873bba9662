/**
 * A small benchmark runner. A scenario gives cases (one async operation each) and names one as the baseline;
 * the runner warms each case up, sizes a run to a target duration, then times N runs of M iterations,
 * interleaving the cases run by run (round robin, order rotated each round) so that a noisy neighbour or CPU
 * frequency drift hits every row alike. Every operation is also timed on its own, so each run yields a mean
 * (the amortised cost, GC included) and a p50 (the typical call, which a neighbour taking the core away for a
 * few ms barely moves). Figures are medians over runs; each row is compared with the baseline by ratio and by
 * the median of per-run differences (runs of the same round are paired).
 *
 * Nothing here knows about locks: a Redis, SQL or ZooKeeper scenario, or a peer library (node-redlock …)
 * measured side by side, is one more file in scenarios/ listed in scenarios/index.ts.
 */
import { readFileSync } from 'node:fs';
import { arch, cpus, freemem, loadavg, platform, release, totalmem } from 'node:os';
import { performance, PerformanceObserver } from 'node:perf_hooks';

/** One row of a scenario's table. */
export interface BenchCase {
  /** Row label, unique within its scenario. */
  readonly name: string;
  /**
   * One operation. Awaited one after the other (latency), or by `concurrency` workers at once (throughput);
   * `worker` (0 … concurrency-1) lets each worker use its own key. Throw to fail the row (e.g. a wrong result).
   */
  readonly op: (worker: number) => unknown;
  /** Workers running `op` at once. Default 1: sequential awaits. */
  readonly concurrency?: number;
  /**
   * Operations per timed run, fixed by the row instead of sized to BENCH_TIME_MS (and over BENCH_ITERATIONS):
   * for rows whose figures need an exact amount of work per run, e.g. N grants of one contended lock.
   */
  readonly iterations?: number;
  /**
   * Told when a batch of `op` calls begins (a warm-up batch or a timed run, and how many calls); what it returns
   * is called once every call of the batch has settled. For rows that keep their own figures run by run.
   */
  readonly onBatch?: (batch: BatchInfo) => (() => void) | void;
}

export interface BatchInfo {
  readonly iterations: number;
  readonly timed: boolean;
}

export interface ScenarioContext {
  readonly quick: boolean;
}

/** What a scenario's setup returns: its rows, which one is the baseline, and how to tear it down. */
export interface ScenarioInstance {
  /** Name of the case every row is compared with (ratio and Δ columns). */
  readonly baseline: string;
  readonly cases: readonly BenchCase[];
  /**
   * At most this many timed runs, below HarnessOptions.runs: for rows whose every run is long (a fixed amount
   * of contended work taking seconds), where 30 runs would take many minutes and 5 already give a median.
   */
  readonly maxRuns?: number;
  /** Lines printed under the table, computed from the figures: overheads, targets met or missed. */
  summarize?(result: ScenarioResult): readonly SummaryLine[];
  /** Closes what setup opened (apps, clients, servers). Called even when a run fails. */
  dispose(): Promise<void>;
}

export interface Scenario {
  /** What `npm run bench -- <filter>` matches, with `tags`: e.g. "memory". */
  readonly name: string;
  readonly title: string;
  readonly tags?: readonly string[];
  /** Builds the cases. Throw BenchSkip when something it needs (a server, a peer library) is missing. */
  setup(context: ScenarioContext): Promise<ScenarioInstance>;
}

/** Thrown by a scenario's setup to be listed as skipped rather than failed (e.g. no Redis on this machine). */
export class BenchSkip extends Error {}

export interface SummaryLine {
  readonly text: string;
  /** false: a target was missed (makes BENCH_STRICT=1 exit non-zero). Omitted: informational. */
  readonly ok?: boolean;
}

export interface HarnessOptions {
  /** Timed runs per case; the figures are medians over them. */
  readonly runs: number;
  /** Each run is sized to take about this long on an idle core (ignored when `iterations` is set). */
  readonly runTimeMs: number;
  /** Untimed calls of each case before its first timed run, for the JIT and caches. */
  readonly warmupMs: number;
  /** Fixed iterations per run instead of sizing by runTimeMs. */
  readonly iterations?: number;
  /** Whether summary lines may pass or fail targets; off for BENCH_QUICK, whose runs are too short to judge. */
  readonly judgeTargets: boolean;
  /** Keeps only the cases it accepts (the baseline always stays). */
  readonly caseFilter?: (scenario: string, caseName: string) => boolean;
}

export interface CaseResult {
  readonly name: string;
  readonly concurrency: number;
  /** Iterations per timed run (M). */
  readonly iterations: number;
  /**
   * Per run, in run order (index i of every case of a scenario is the same round): wall time / M, in µs.
   * With concurrency > 1 this is the inverse of throughput, not a latency.
   */
  readonly meanUs: readonly number[];
  /** Per run: the median, and the 99th percentile, of the operations' own latencies, in µs. */
  readonly p50Us: readonly number[];
  readonly p99Us: readonly number[];
  /** Medians over runs of the above. */
  readonly median: { readonly meanUs: number; readonly p50Us: number; readonly p99Us: number };
  /** Median absolute deviation of meanUs over runs, as a fraction of its median. */
  readonly spread: number;
  /** Share of the timed runs' wall time spent in main-thread GC pauses. */
  readonly gcShare: number;
  /** 1e6 / median.meanUs. */
  readonly opsPerSec: number;
}

export interface ScenarioResult {
  readonly name: string;
  readonly title: string;
  readonly baseline: string;
  readonly cases: readonly CaseResult[];
  readonly summary: readonly SummaryLine[];
  /** CPU use while the scenario ran: how much of the machine other processes took (noise). */
  readonly cpu: CpuShare | undefined;
}

export interface CpuShare {
  readonly cores: number;
  /** Cores this process kept busy on average (its JavaScript, and GC helper threads). */
  readonly own: number;
  /** Cores everything else kept busy on average: other processes, the kernel, steal. */
  readonly others: number;
}

// ---------------------------------------------------------------------------------------------------------
// statistics

export function median(values: ArrayLike<number>): number {
  return percentile(values, 0.5);
}

/** Linear interpolation between closest ranks; `q` in [0, 1]. */
export function percentile(values: ArrayLike<number>, q: number): number {
  return percentileOfSorted(Float64Array.from(values).sort(), q);
}

function percentileOfSorted(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const position = (sorted.length - 1) * q;
  const low = Math.floor(position);
  const high = Math.ceil(position);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (position - low);
}

function mad(values: readonly number[]): number {
  const m = median(values);
  return median(values.map((v) => Math.abs(v - m)));
}

export type Statistic = 'meanUs' | 'p50Us';

/**
 * How much slower `row` is than `base`, in µs per operation, by the per-run mean or p50: the median of the
 * per-round differences. Rounds are interleaved, so pairing them cancels drift that a difference of two
 * medians would keep.
 */
export function pairedDeltaUs(row: CaseResult, base: CaseResult, statistic: Statistic = 'meanUs'): number {
  const a = row[statistic];
  const b = base[statistic];
  const n = Math.min(a.length, b.length);
  const deltas: number[] = [];
  for (let i = 0; i < n; i++) deltas.push(a[i]! - b[i]!);
  return median(deltas);
}

export function caseNamed(result: ScenarioResult, name: string): CaseResult {
  const found = result.cases.find((c) => c.name === name);
  if (!found) throw new Error(`Scenario "${result.name}" has no case "${name}".`);
  return found;
}

// ---------------------------------------------------------------------------------------------------------
// machine noise

/** busy and total jiffies over all CPUs, from /proc/stat (Linux); undefined elsewhere. */
function readProcStat(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = user! + nice! + system! + irq! + softirq! + (steal ?? 0);
    return { busy, total: busy + idle! + (iowait ?? 0) };
  } catch {
    return undefined;
  }
}

/** Starts measuring; the returned function tells how busy this process and everything else kept the CPUs. */
export function cpuMeter(): () => CpuShare | undefined {
  const cores = cpus().length;
  const stat = readProcStat();
  const usage = process.cpuUsage();
  const started = performance.now();
  return () => {
    const end = readProcStat();
    if (!stat || !end || end.total === stat.total) return undefined;
    const wallUs = (performance.now() - started) * 1000;
    const used = process.cpuUsage(usage);
    const own = (used.user + used.system) / wallUs;
    const busy = ((end.busy - stat.busy) / (end.total - stat.total)) * cores;
    return { cores, own, others: Math.max(0, busy - own) };
  };
}

// ---------------------------------------------------------------------------------------------------------
// running

/** Main-thread GC pauses (start and duration, ms) while it is connected. */
function gcRecorder(): { pauses: { start: number; duration: number }[]; stop(): Promise<void> } {
  const pauses: { start: number; duration: number }[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) pauses.push({ start: entry.startTime, duration: entry.duration });
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    pauses,
    async stop() {
      // Entries are delivered on a later turn of the event loop (not before setImmediate): let them arrive.
      await new Promise<void>((resolve) => setTimeout(resolve, 20));
      observer.disconnect();
    },
  };
}

/**
 * Runs `op` `iterations` times, timing each call into `latencies` (ms); returns the run's wall time (ms).
 * With concurrency, workers claim iterations from a shared counter.
 */
async function runBatch(
  op: (worker: number) => unknown,
  iterations: number,
  concurrency: number,
  latencies: Float64Array,
): Promise<number> {
  let next = 0;
  const worker = async (id: number): Promise<void> => {
    for (let i = next++; i < iterations; i = next++) {
      const started = performance.now();
      await op(id);
      latencies[i] = performance.now() - started;
    }
  };
  const started = performance.now();
  if (concurrency <= 1) await worker(0);
  else await Promise.all(Array.from({ length: concurrency }, (_, id) => worker(id)));
  return performance.now() - started;
}

/** Calls `op` for about `ms`, and returns the iterations a run of `targetMs` needs. */
async function warmUp(c: BenchCase, ms: number, targetMs: number): Promise<number> {
  const concurrency = c.concurrency ?? 1;
  let batch = 16;
  let perOpMs = Infinity;
  let scratch = new Float64Array(batch);
  const until = performance.now() + ms;
  do {
    if (scratch.length < batch) scratch = new Float64Array(batch);
    const ended = c.onBatch?.({ iterations: batch, timed: false });
    const wallMs = await runBatch(c.op, batch, concurrency, scratch);
    ended?.();
    // The fastest batch sizes the runs: one slowed by a neighbour would make every run too short.
    if (wallMs >= 1) perOpMs = Math.min(perOpMs, wallMs / batch);
    if (wallMs < 5) batch *= 2;
  } while (performance.now() < until || !Number.isFinite(perOpMs));
  return niceCount(targetMs / perOpMs);
}

/** Rounds down to 1, 2 or 5 times a power of ten, at least 10. */
function niceCount(n: number): number {
  if (!Number.isFinite(n) || n < 10) return 10;
  const power = 10 ** Math.floor(Math.log10(n));
  const mantissa = n / power;
  return (mantissa >= 5 ? 5 : mantissa >= 2 ? 2 : 1) * power;
}

/** What timing one operation costs by itself (two performance.now() calls), in µs: included in every row. */
export function timerCostUs(): number {
  const n = 200_000;
  const sink = new Float64Array(1);
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const started = performance.now();
    for (let i = 0; i < n; i++) sink[0] = performance.now() - performance.now();
    best = Math.min(best, ((performance.now() - started) * 1000) / n);
  }
  return best;
}

export type Log = (line: string) => void;

/** Runs one scenario's cases interleaved round by round, prints its table and summary, returns the figures. */
export async function runScenario(
  scenario: Scenario,
  instance: ScenarioInstance,
  options: HarnessOptions,
  log: Log,
): Promise<ScenarioResult> {
  const filter = options.caseFilter;
  const cases = instance.cases.filter((c) => c.name === instance.baseline || !filter || filter(scenario.name, c.name));
  if (!cases.some((c) => c.name === instance.baseline)) {
    throw new Error(
      `Scenario "${scenario.name}" names baseline "${instance.baseline}", which is not one of its cases.`,
    );
  }
  const stopMeter = cpuMeter();
  const iterations = new Map<BenchCase, number>();
  for (const c of cases) {
    const sized = await warmUp(c, options.warmupMs, options.runTimeMs);
    iterations.set(c, c.iterations ?? options.iterations ?? sized);
  }
  const latencies = new Float64Array(Math.max(...iterations.values()));
  const runs = new Map<BenchCase, { meanUs: number[]; p50Us: number[]; p99Us: number[]; spans: [number, number][] }>(
    cases.map((c) => [c, { meanUs: [], p50Us: [], p99Us: [], spans: [] }]),
  );
  const gc = gcRecorder();
  const rounds = Math.max(1, Math.min(options.runs, instance.maxRuns ?? options.runs));
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so no row always runs right after the same neighbour.
    for (let k = 0; k < cases.length; k++) {
      const c = cases[(k + round) % cases.length]!;
      const m = iterations.get(c)!;
      // No forced GC between runs: after a full gc() V8 starts incremental marking early in the next run, and
      // its write barriers made every row here 1.5–2× slower by run mean than in steady state.
      const startedAt = performance.now();
      const ended = c.onBatch?.({ iterations: m, timed: true });
      const wallMs = await runBatch(c.op, m, c.concurrency ?? 1, latencies);
      ended?.();
      const sorted = latencies.subarray(0, m).sort();
      const figures = runs.get(c)!;
      figures.meanUs.push((wallMs * 1000) / m);
      figures.p50Us.push(percentileOfSorted(sorted, 0.5) * 1000);
      figures.p99Us.push(percentileOfSorted(sorted, 0.99) * 1000);
      figures.spans.push([startedAt, startedAt + wallMs]);
    }
  }
  await gc.stop();
  const results: CaseResult[] = cases.map((c) => {
    const { meanUs, p50Us, p99Us, spans } = runs.get(c)!;
    const medianMean = median(meanUs);
    const runMs = spans.reduce((sum, [from, to]) => sum + (to - from), 0);
    const gcMs = gc.pauses
      .filter((p) => spans.some(([from, to]) => p.start >= from && p.start < to))
      .reduce((sum, p) => sum + p.duration, 0);
    return {
      name: c.name,
      concurrency: c.concurrency ?? 1,
      iterations: iterations.get(c)!,
      meanUs,
      p50Us,
      p99Us,
      median: { meanUs: medianMean, p50Us: median(p50Us), p99Us: median(p99Us) },
      spread: mad(meanUs) / medianMean,
      gcShare: runMs > 0 ? gcMs / runMs : 0,
      opsPerSec: 1e6 / medianMean,
    };
  });
  const measured: ScenarioResult = {
    name: scenario.name,
    title: scenario.title,
    baseline: instance.baseline,
    cases: results,
    summary: [],
    cpu: stopMeter(),
  };
  const summary = instance.summarize ? instance.summarize(measured) : [];
  const result = {
    ...measured,
    summary: options.judgeTargets
      ? summary
      : summary.map((line) => ({ text: `${line.text}${line.ok === undefined ? '' : ' — not judged in a quick run'}` })),
  };
  log(formatTable(result));
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// printing

export function formatUs(us: number): string {
  if (!Number.isFinite(us)) return String(us);
  const abs = Math.abs(us);
  return us.toFixed(abs < 10 ? 3 : abs < 100 ? 2 : 1);
}

function formatSigned(us: number): string {
  return `${us >= 0 ? '+' : ''}${formatUs(us)}`;
}

export function formatRate(perSec: number): string {
  const digits = Math.max(0, Math.floor(Math.log10(perSec)) - 2);
  const rounded = Math.round(perSec / 10 ** digits) * 10 ** digits;
  return rounded.toLocaleString('en-US');
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function formatTable(result: ScenarioResult): string {
  const base = caseNamed(result, result.baseline);
  const header = ['case', 'µs/op', '±MAD', 'ops/s', 'p50 µs', 'p99 µs', 'GC', '× base', 'Δ µs/op', 'Δ p50', 'M'];
  const rows = result.cases.map((c) => [
    c.name === result.baseline ? `${c.name} (baseline)` : c.concurrency > 1 ? `${c.name} †` : c.name,
    formatUs(c.median.meanUs),
    `${(c.spread * 100).toFixed(1)}%`,
    formatRate(c.opsPerSec),
    formatUs(c.median.p50Us),
    formatUs(c.median.p99Us),
    `${(c.gcShare * 100).toFixed(0)}%`,
    c === base ? '1.00' : (c.median.meanUs / base.median.meanUs).toFixed(2),
    c === base ? '' : formatSigned(pairedDeltaUs(c, base, 'meanUs')),
    c === base ? '' : formatSigned(pairedDeltaUs(c, base, 'p50Us')),
    String(c.iterations),
  ]);
  const lines = [
    '',
    `## ${result.name}: ${result.title}`,
    `medians of ${base.meanUs.length} interleaved runs of M ops. µs/op = run time / M (GC included); p50, p99 = of each ` +
      `op's own latency; GC = share of run time in GC pauses; Δ = median per-run difference to the baseline.`,
    ...(result.cases.some((c) => c.concurrency > 1)
      ? ['† concurrent workers: µs/op is 1 / throughput; p50, p99 are per-op latencies under that load.']
      : []),
    result.cpu
      ? `CPU while measuring: this process ${result.cpu.own.toFixed(2)} cores, everything else ${result.cpu.others.toFixed(2)} ` +
        `cores (of ${result.cpu.cores})${result.cpu.others > 0.25 ? ' — the machine was busy: trust p50 and Δ p50 more than µs/op' : ''}`
      : 'CPU while measuring: unknown (no /proc/stat)',
    '',
    table(header, rows),
  ];
  if (result.summary.length > 0) {
    lines.push('');
    for (const s of result.summary) lines.push(`${s.ok === false ? '✗ ' : s.ok === true ? '✓ ' : '  '}${s.text}`);
  }
  return lines.join('\n');
}

/** What the numbers were measured on: printed before the tables, and kept in the JSON report. */
export function machineConditions(): Record<string, string> {
  const cores = cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    os: `${platform()} ${release()} ${arch()}`,
    cpu: `${cores.length} × ${cores[0]?.model.trim() ?? 'unknown'}${cores[0]?.speed ? ` @ ${cores[0].speed} MHz` : ''}`,
    memory: `${(freemem() / 2 ** 30).toFixed(1)} GiB free of ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    loadavg: loadavg()
      .map((l) => l.toFixed(2))
      .join(' '),
    timerCost: `${formatUs(timerCostUs())} µs per op (two performance.now() calls, in every row)`,
  };
}
