/**
 * (c) One hot key under contention, on 1 Redis node and on 5: 16 workers, each with connections of its own
 * (a LockService and backend of its own for ours: 16 app instances), each take the key 100 times, hold it
 * for `await setTimeout(1)` and release it, coming straight back for the next one. Ours through
 * LockService.using() — what users call, and the row the targets judge — against the three peers, each
 * waiting up to 10 s per acquisition with its documented retry settings (see redis/lockers.ts).
 *
 * One harness op is one worker's whole series (the harness runs the 16 workers as its concurrent workers,
 * one op each), so the table's µs/op and p50/p99 are per series; the figures that matter are the summary's,
 * pooled over the timed runs. All marks are performance.now() in this one process:
 * - locks/s: grants / (last worker done − first call), median over runs;
 * - acquire wait: call → holder's work starts (p50, p99, max);
 * - hand-off: holder's work ends (its release starts) → next holder's work starts; "cross-worker" when the
 *   next holder is another worker; a stall is the longest hand-off while another worker was waiting;
 * - re-take: the releaser itself is the next holder although another worker was waiting;
 * - failed acquires: calls that did not get the key within 10 s;
 * - Redis commands per lock: sent by the row's clients (round trips), and executed on every node by INFO
 *   commandstats read before and after each timed run (which also counts each call a Lua script makes).
 * The ideal rate is 1 / (measured hold + 2 RTT), the RTT being the median PING round trip through ioredis
 * measured before each timed run: one round trip to free the key and tell the next holder, one to take it.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  formatRate,
  median,
  percentile,
  type BatchInfo,
  type BenchCase,
  type Scenario,
  type SummaryLine,
} from '../harness';
import { PEERS, RAW, USING, WAIT_TIMEOUT_MS, type Locker } from './redis/lockers';
import { addCounts, breakdown, RedisClients, redisPorts, totalOf, type CommandCounts } from './redis/nodes';
import { countCommandsFrom, type CommandUse } from './redis/rows';

const WORKERS = 16;
const LOCKS_PER_WORKER = { full: 100, quick: 10 };
/** Each timed run is 1 600 contended grants (seconds): 5 give a median; the pooled percentiles have 8 000. */
const RUNS = 5;
const RTT_SAMPLES = 50;
/**
 * Not a contender: the raw floor (SET NX PX, hold, Lua compare-and-delete) with the same 16 workers taking turns,
 * so nobody ever waits. What one lock with this hold costs on this machine at best, round trips, timers and
 * system calls included: a check on the ideal rate, which counts 2 PING round trips only.
 */
const REFERENCE = 'reference: raw floor, workers take turns (nobody waits)';

const TARGET = {
  idealShare: 0.9,
  waitP99Ms: 40,
  waitMaxMs: 100,
  crossHandoffP50Ms: 0.3,
  commandsPerLock: 4,
  stallMs: 200,
} as const;

interface Grant {
  readonly worker: number;
  readonly calledAt: number;
  readonly grantedAt: number;
  releaseAt: number;
}

interface Failure {
  readonly worker: number;
  readonly calledAt: number;
  readonly failedAt: number;
  readonly error: unknown;
}

/** One harness batch: the 16 workers' series. */
interface Batch {
  readonly timed: boolean;
  active: number;
  readonly grants: Grant[];
  readonly failures: Failure[];
  /** Errors after a grant (the release, or the library's own check after the work): never expected. */
  readonly errors: unknown[];
  ready: Promise<void>;
  openedAt: number;
  closedAt: number;
  /** CPU this process used from openedAt to closedAt (all workers, their connections, GC), in µs. */
  cpu: NodeJS.CpuUsage | undefined;
  cpuUs: number;
  rttMs: number;
  stop: (() => Promise<CommandUse>) | undefined;
  use: CommandUse | undefined;
}

/** The pooled figures of one row. */
interface Figures {
  readonly runs: number;
  readonly grants: number;
  readonly locksPerSec: number;
  readonly waits: number[];
  readonly crossHandoffs: number[];
  /** Every hand-off, also from a worker to itself. */
  readonly handoffs: number[];
  readonly stallMs: number;
  readonly contestedPairs: number;
  readonly retakes: number;
  readonly failures: number;
  readonly errors: number;
  readonly firstError: unknown;
  readonly holdMs: number;
  readonly rttMs: number;
  /** CPU this process spent per lock, in µs. */
  readonly cpuPerLockUs: number;
  readonly sent: CommandCounts;
  readonly executed: CommandCounts;
}

class ContendedRow {
  readonly batches: Batch[] = [];
  private batch: Batch | undefined;
  private inside = 0;
  private violation: Error | undefined;
  /** Reference rows: the workers take turns, each running its whole series after the previous one's. */
  private turn: Promise<void> = Promise.resolve();

  constructor(
    readonly label: string,
    private readonly lockers: readonly Locker[],
    private readonly key: string,
    private readonly perWorker: number,
    private readonly pool: RedisClients,
    /** What this row's clients sent. */
    private readonly sent: CommandCounts,
    /** The workers take turns instead of contending: the reference for what a hand-off costs at best. */
    readonly sequential = false,
  ) {}

  readonly onBatch = (info: BatchInfo): (() => void) => {
    const batch: Batch = {
      timed: info.timed,
      active: info.iterations,
      grants: [],
      failures: [],
      errors: [],
      ready: Promise.resolve(),
      openedAt: NaN,
      closedAt: NaN,
      cpu: undefined,
      cpuUs: NaN,
      rttMs: NaN,
      stop: undefined,
      use: undefined,
    };
    // Before the workers start: the round trip now, and the counters (INFO and PING are not the row's work).
    batch.ready = (async () => {
      if (batch.timed) {
        batch.rttMs = await this.pool.roundTripMs(RTT_SAMPLES);
        batch.stop = await countCommandsFrom(this.pool, this.sent);
      }
      batch.cpu = process.cpuUsage();
      batch.openedAt = performance.now();
    })();
    this.batch = batch;
    return () => {
      if (batch.timed) this.batches.push(batch);
    };
  };

  /** One worker's series of acquisitions. */
  readonly op = async (worker: number): Promise<void> => {
    const batch = this.batch!;
    await batch.ready;
    if (!this.sequential) return this.series(batch, worker);
    const previous = this.turn;
    const mine = previous.then(() => this.series(batch, worker));
    this.turn = mine.catch(() => undefined);
    return mine;
  };

  private async series(batch: Batch, worker: number): Promise<void> {
    const locker = this.lockers[worker]!;
    for (let i = 0; i < this.perWorker; i++) {
      const calledAt = performance.now();
      let grant: Grant | undefined;
      try {
        await locker.run(this.key, async () => {
          grant = { worker, calledAt, grantedAt: performance.now(), releaseAt: NaN };
          batch.grants.push(grant);
          if (++this.inside !== 1) this.violation ??= new Error(`${this.label}: two holders of the key at once`);
          await sleep(1);
          this.inside--;
          grant.releaseAt = performance.now();
        });
      } catch (error) {
        if (grant) batch.errors.push(error);
        else batch.failures.push({ worker, calledAt, failedAt: performance.now(), error });
      }
      if (this.violation) throw this.violation;
    }
    if (--batch.active === 0) {
      batch.closedAt = performance.now();
      const cpu = process.cpuUsage(batch.cpu);
      batch.cpuUs = cpu.user + cpu.system;
      // The last worker is done: nothing of this row is in flight, so the counters hold this run only.
      if (batch.stop) batch.use = await batch.stop();
    }
  }

  figures(): Figures | undefined {
    if (this.batches.length === 0) return undefined;
    const waits: number[] = [];
    const crossHandoffs: number[] = [];
    const handoffs: number[] = [];
    const holds: number[] = [];
    const rates: number[] = [];
    const sent: CommandCounts = new Map();
    const executed: CommandCounts = new Map();
    let grants = 0;
    let cpuUs = 0;
    let stallMs = 0;
    let contestedPairs = 0;
    let retakes = 0;
    let failures = 0;
    let errors = 0;
    let firstError: unknown;
    for (const batch of this.batches) {
      grants += batch.grants.length;
      failures += batch.failures.length;
      errors += batch.errors.length;
      firstError ??= batch.errors[0] ?? batch.failures[0]?.error;
      rates.push(batch.grants.length / ((batch.closedAt - batch.openedAt) / 1000));
      cpuUs += batch.cpuUs;
      if (batch.use) {
        addCounts(sent, batch.use.sent);
        addCounts(executed, batch.use.executed);
      }
      const waiting = waitingAt(batch);
      const order = batch.grants;
      for (let i = 0; i < order.length; i++) {
        const grant = order[i]!;
        waits.push(grant.grantedAt - grant.calledAt);
        holds.push(grant.releaseAt - grant.grantedAt);
        if (i === 0) continue;
        const prev = order[i - 1]!;
        const handoff = grant.grantedAt - prev.releaseAt;
        handoffs.push(handoff);
        if (grant.worker !== prev.worker) crossHandoffs.push(handoff);
        if (!waiting(prev.releaseAt, prev.worker)) continue;
        contestedPairs++;
        stallMs = Math.max(stallMs, handoff);
        if (grant.worker === prev.worker) retakes++;
      }
    }
    return {
      runs: this.batches.length,
      grants,
      locksPerSec: median(rates),
      waits,
      crossHandoffs,
      handoffs,
      stallMs,
      contestedPairs,
      retakes,
      failures,
      errors,
      firstError,
      holdMs: median(holds),
      cpuPerLockUs: cpuUs / grants,
      rttMs: median(this.batches.map((b) => b.rttMs)),
      sent,
      executed,
    };
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.lockers.map((l) => l.close()));
  }
}

/**
 * Whether a worker other than `except` had an acquisition under way at `at`. Each worker's acquisitions
 * follow one another, so the last one it started by then is the only candidate.
 */
function waitingAt(batch: Batch): (at: number, except: number) => boolean {
  const spans = new Map<number, { from: number; to: number }[]>();
  const add = (worker: number, from: number, to: number): void => {
    let list = spans.get(worker);
    if (!list) spans.set(worker, (list = []));
    list.push({ from, to });
  };
  for (const g of batch.grants) add(g.worker, g.calledAt, g.grantedAt);
  for (const f of batch.failures) add(f.worker, f.calledAt, f.failedAt);
  for (const list of spans.values()) list.sort((a, b) => a.from - b.from);
  return (at, except) => {
    for (const [worker, list] of spans) {
      if (worker === except) continue;
      let low = 0;
      let high = list.length - 1;
      let found = -1;
      while (low <= high) {
        const mid = (low + high) >> 1;
        if (list[mid]!.from <= at) {
          found = mid;
          low = mid + 1;
        } else high = mid - 1;
      }
      if (found >= 0 && list[found]!.to > at) return true;
    }
    return false;
  };
}

const ms = (value: number): string =>
  !Number.isFinite(value)
    ? String(value)
    : value < 1
      ? `${(value * 1000).toFixed(0)} µs`
      : `${value.toFixed(value < 10 ? 2 : 1)} ms`;

const pct = (share: number): string => `${(share * 100).toFixed(share < 0.1 ? 1 : 0)} %`;

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

function contention(nodes: 1 | 5): Scenario {
  return {
    name: `redis-contention-${nodes}`,
    title:
      `Redis, ${nodes === 1 ? '1 node' : `${nodes} nodes (Redlock)`}: ${WORKERS} workers on their own connections ` +
      `take one key, hold it for setTimeout(1), release`,
    tags: ['redis', 'store', 'peers', 'contention'],
    async setup({ quick }) {
      const pool = new RedisClients(redisPorts(nodes));
      const perWorker = quick ? LOCKS_PER_WORKER.quick : LOCKS_PER_WORKER.full;
      const rows: ContendedRow[] = [];
      const close = async (): Promise<void> => {
        await Promise.allSettled(rows.map((r) => r.close()));
        await pool.close();
      };
      try {
        const entries = [
          ...[USING, ...PEERS].map((kind) => ({ kind, label: kind.label(nodes), sequential: false })),
          { kind: RAW, label: REFERENCE, sequential: true },
        ];
        for (const [index, { kind, label, sequential }] of entries.entries()) {
          const sent: CommandCounts = new Map();
          const lockers: Locker[] = [];
          const row = new ContendedRow(label, lockers, `${pool.prefix}hot:${index}`, perWorker, pool, sent, sequential);
          rows.push(row);
          for (let w = 0; w < WORKERS; w++) lockers.push(await kind.make(await pool.openAll(sent)));
        }
        const cases: BenchCase[] = rows.map((row) => ({
          name: row.label,
          concurrency: WORKERS,
          iterations: WORKERS,
          onBatch: row.onBatch,
          op: row.op,
        }));
        const judged = rows[0]!;
        return {
          baseline: judged.label,
          cases,
          maxRuns: RUNS,
          summarize(): readonly SummaryLine[] {
            const lines: SummaryLine[] = [
              {
                text:
                  `one op = one worker's ${perWorker} locks (the table is per series; these lines are per lock, ` +
                  `pooled over the timed runs); waits up to ${WAIT_TIMEOUT_MS / 1000} s per acquisition; ` +
                  `judged: ${judged.label} (what users call)`,
              },
            ];
            let judgedFigures: Figures | undefined;
            let reference: Figures | undefined;
            for (const row of rows) {
              const f = row.figures();
              if (!f) continue;
              if (row === judged) judgedFigures = f;
              const sentPerLock = totalOf(f.sent) / f.grants;
              const executedPerLock = totalOf(f.executed) / f.grants;
              const commands =
                `  Redis commands per lock: sent ${sentPerLock.toFixed(2)} (${breakdown(f.sent, f.grants)}); ` +
                `executed ${executedPerLock.toFixed(2)} (${breakdown(f.executed, f.grants)}); ` +
                `this process's CPU ${f.cpuPerLockUs.toFixed(0)} µs per lock`;
              lines.push({ text: `${row.label}:` });
              if (row.sequential) {
                reference = f;
                lines.push(
                  {
                    text:
                      `  ${formatRate(f.locksPerSec)} locks/s; release → next grant p50 ${ms(percentile(f.handoffs, 0.5))}, ` +
                      `p99 ${ms(percentile(f.handoffs, 0.99))}; hold p50 ${ms(f.holdMs)}; PING RTT ${ms(f.rttMs)}`,
                  },
                  { text: commands },
                );
                continue;
              }
              lines.push({
                text:
                  `  ${formatRate(f.locksPerSec)} locks/s; acquire wait p50 ${ms(percentile(f.waits, 0.5))}, ` +
                  `p99 ${ms(percentile(f.waits, 0.99))}, max ${ms(Math.max(...f.waits))}; ` +
                  `hold p50 ${ms(f.holdMs)}`,
              });
              lines.push({
                text:
                  `  cross-worker hand-off p50 ${ms(percentile(f.crossHandoffs, 0.5))}, ` +
                  `p99 ${ms(percentile(f.crossHandoffs, 0.99))} (${f.crossHandoffs.length}); ` +
                  `longest stall ${ms(f.stallMs)}; releaser re-took its own lock ` +
                  `${pct(f.contestedPairs > 0 ? f.retakes / f.contestedPairs : NaN)} of ${f.contestedPairs} contested hand-offs`,
              });
              lines.push({
                text:
                  `  failed acquires ${f.failures} of ${f.grants + f.failures}` +
                  `${f.errors > 0 ? `, ${f.errors} errors after a grant` : ''}` +
                  `${f.firstError !== undefined ? ` (first: ${describeError(f.firstError)})` : ''}`,
              });
              lines.push({ text: commands });
            }
            const f = judgedFigures;
            if (!f) return lines;
            if (reference) {
              lines.push({
                text:
                  `${judged.label}: ${(f.locksPerSec / reference.locksPerSec).toFixed(2)}× the reference's locks/s; ` +
                  `cross-worker hand-off p50 ${ms(percentile(f.crossHandoffs, 0.5))} vs the reference's release → next grant ` +
                  `${ms(percentile(reference.handoffs, 0.5))}`,
              });
            }
            if (nodes === 1) {
              const ideal = 1000 / (f.holdMs + 2 * f.rttMs);
              const waitP99 = percentile(f.waits, 0.99);
              const waitMax = Math.max(...f.waits);
              const handoffP50 = percentile(f.crossHandoffs, 0.5);
              const sentPerLock = totalOf(f.sent) / f.grants;
              lines.push(
                {
                  text:
                    `${judged.label}: ${formatRate(f.locksPerSec)} locks/s = ${(f.locksPerSec / ideal).toFixed(2)}× the ideal ` +
                    `${formatRate(ideal)} = 1 / (hold ${ms(f.holdMs)} + 2 × RTT ${ms(f.rttMs)}) (target ≥ ${TARGET.idealShare}×)`,
                  ok: f.locksPerSec >= TARGET.idealShare * ideal,
                },
                {
                  text: `${judged.label}: acquire wait p99 ${ms(waitP99)} (target ≤ ${TARGET.waitP99Ms} ms)`,
                  ok: waitP99 <= TARGET.waitP99Ms,
                },
                {
                  text: `${judged.label}: acquire wait max ${ms(waitMax)} (target ≤ ${TARGET.waitMaxMs} ms)`,
                  ok: waitMax <= TARGET.waitMaxMs,
                },
                {
                  text: `${judged.label}: cross-worker hand-off p50 ${ms(handoffP50)} (target ≤ ${TARGET.crossHandoffP50Ms} ms)`,
                  ok: handoffP50 <= TARGET.crossHandoffP50Ms,
                },
                {
                  text:
                    `${judged.label}: ${sentPerLock.toFixed(2)} Redis commands sent per lock (target ≤ ${TARGET.commandsPerLock}; ` +
                    `counted as round trips: INFO commandstats also counts the calls inside Lua scripts, ` +
                    `${(totalOf(f.executed) / f.grants).toFixed(2)} per lock)`,
                  ok: sentPerLock <= TARGET.commandsPerLock,
                },
                {
                  text: `${judged.label}: ${f.failures} failed acquires with a ${WAIT_TIMEOUT_MS / 1000} s waitTimeout (target 0)`,
                  ok: f.failures === 0 && f.errors === 0,
                },
              );
            } else {
              lines.push({
                text: `${judged.label}: longest stall ${ms(f.stallMs)} (target ≤ ${TARGET.stallMs} ms)`,
                ok: f.stallMs <= TARGET.stallMs,
              });
            }
            return lines;
          },
          dispose: close,
        };
      } catch (error) {
        await close();
        throw error;
      }
    },
  };
}

export const redisContentionScenarios: readonly Scenario[] = [contention(1), contention(5)];
