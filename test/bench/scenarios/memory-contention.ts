/**
 * One hot key under contention on the memory backend: several "app instances" (LockService objects) share one
 * MemoryLockBackend, and 16 or 32 contenders spread over them each call `using(HOT, work, { waitTimeout })` over
 * and over. What later peer scenarios (node-redlock, redis-semaphore …, which all wait by polling) are compared
 * with: how long the lock sits idle between two holders (handoff), how long a caller waits, how many grants a
 * second one key allows, and who gets the lock next — the contender (or app instance) that just released it,
 * or someone who was waiting.
 *
 * Each row's operation is one acquisition by one contender (the harness's concurrent workers are the
 * contenders), and each timed run is a fixed number of grants. Every grant is marked with performance.now():
 * the library's 'released' and 'acquired' events (emitted synchronously, so the marks are taken at the moment
 * the lock changes hands), the using() call, and the start and end of the critical section. Figures are pooled
 * over the timed runs. Handoffs, re-takes and fairness count the steady state only: a run ends with a drain
 * (no contender comes back once the run's grants are handed out), which would make every last holder look like
 * it "let go" of the lock.
 *
 * Two ways a contender comes back for the lock:
 * - "tight": awaits using() and calls it again at once, as a `while (true) await using(...)` job loop does and as
 *   the peers' benchmarks do. On the memory backend nothing but microtasks separates a release from the
 *   releaser's next attempt, while a waiter is woken one event-loop turn later: only the backend's FIFO line
 *   (no taking a free key past it) keeps the releaser from re-taking the lock every time.
 * - "event loop": the contender yields to the event loop (one setImmediate) first, as a request handler or a
 *   timer tick arrives: every store call over a network (Redis …) puts such a turn there anyway.
 *
 * Invariants, checked in every run (quick ones too) and fatal: the lock never has two holders; no 'lost' or
 * 'failed' event; every acquisition is granted within waitTimeout; and every contender gets the lock during the
 * steady state, in "tight" rows too (before the memory backend kept a FIFO line, a tight loop re-took its own lock
 * 100 % of the time and starved the 15 others).
 */
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import {
  LockService,
  LockUnavailableError,
  MemoryLockBackend,
  type AcquireOutcome,
  type AcquireRequest,
  type LockEvent,
  type LockOptions,
  type WaitForRelease,
} from '../../../lib';
import {
  caseNamed,
  formatRate,
  formatUs,
  median,
  percentile,
  type BatchInfo,
  type BenchCase,
  type CaseResult,
  type Scenario,
  type SummaryLine,
} from '../harness';

const HOT = 'bench:hot';
const INSTANCES = 4;
/** Large: a contender that waits this long is starved, and the run fails. */
const WAIT_TIMEOUT_MS = 10_000;
const USING: LockOptions = { waitTimeout: WAIT_TIMEOUT_MS };

type Reentry = 'tight' | 'event loop';

interface Work {
  readonly label: string;
  readonly run: () => Promise<void>;
}

const HOPS = 3;
const WORK = {
  hops: {
    label: `${HOPS} setImmediate hops`,
    run: async () => {
      for (let i = 0; i < HOPS; i++) await nextTurn();
    },
  },
  io: { label: '~1 ms I/O (setTimeout 1)', run: () => sleep(1) },
} satisfies Record<string, Work>;

interface Variant {
  readonly name: string;
  readonly contenders: number;
  readonly instances: number;
  readonly work: Work;
  readonly reentry: Reentry;
  /** Grants per timed run (full, quick). */
  readonly grants: { readonly full: number; readonly quick: number };
}

const variant = (
  contenders: number,
  instances: number,
  work: Work,
  reentry: Reentry,
  grants: Variant['grants'],
): Variant => ({
  name:
    contenders === 1
      ? `1 contender, ${work.label} (uncontended)`
      : `${contenders} contenders / ${instances} instances, ${work.label}, ${reentry}`,
  contenders,
  instances,
  work,
  reentry,
  grants,
});

const BASELINE = variant(1, 1, WORK.hops, 'tight', { full: 1000, quick: 200 });
const VARIANTS: readonly Variant[] = [
  BASELINE,
  variant(16, INSTANCES, WORK.hops, 'event loop', { full: 400, quick: 160 }),
  variant(32, INSTANCES, WORK.hops, 'event loop', { full: 400, quick: 320 }),
  variant(16, INSTANCES, WORK.hops, 'tight', { full: 400, quick: 160 }),
  // Quick runs are 3, full ones 30: a quick row needs enough grants per run to judge starvation (see starved()).
  variant(16, INSTANCES, WORK.io, 'event loop', { full: 80, quick: 100 }),
  variant(16, INSTANCES, WORK.io, 'tight', { full: 80, quick: 100 }),
];

/** Counts the store calls the waiting policy makes: every failed attempt is a waiter woken for nothing. */
class CountingMemoryBackend extends MemoryLockBackend {
  attempts = 0;
  waits = 0;

  override acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    this.attempts++;
    return super.acquire(request);
  }

  override waitForRelease(wait: WaitForRelease): Promise<void> {
    this.waits++;
    return super.waitForRelease(wait);
  }
}

/** One grant, all times from performance.now() (ms). */
interface Grant {
  readonly contender: number;
  readonly instance: number;
  /** using() called (after the event-loop turn, in "event loop" rows). */
  readonly calledAt: number;
  /** The holder's 'acquired' event. */
  readonly acquiredAt: number;
  /** Critical section started and ended. */
  readonly startAt: number;
  endAt: number;
  /** The holder's 'released' event. */
  releasedAt: number;
}

/** The grants of one harness batch (a timed run, or a warm-up batch). */
interface Window {
  readonly timed: boolean;
  readonly grants: Grant[];
  openedAt: number;
  closedAt: number;
  /** The batch's last using() call: after it nobody comes back, the drain begins. */
  lastCallAt: number;
  attempts: number;
  waits: number;
}

/** Mulberry32: a fixed, seeded order, so runs are comparable. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Which app instance each contender runs in: equally many per instance, in a shuffled order. (With contender
 * c in instance c % 4, a strict FIFO would hand the lock to another instance every time; in blocks, to the same
 * one 3 times in 4. Shuffled, FIFO comes out near chance and a same-instance bias shows as one.)
 */
function assignInstances(contenders: number, instances: number): number[] {
  const slots = Array.from({ length: contenders }, (_, c) => c % instances);
  const random = seeded(0x10c4);
  for (let i = slots.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [slots[i], slots[j]] = [slots[j]!, slots[i]!];
  }
  return slots;
}

/** Everything one row needs: its store, its app instances, and the marks of every grant. */
class ContendedLock {
  readonly backend = new CountingMemoryBackend();
  readonly services: LockService[];
  readonly instanceOf: number[];
  readonly grantsPerRun: number;
  /** The timed runs. */
  readonly windows: Window[] = [];
  private window: Window | undefined;
  /** Holders by the events: 'acquired' minus 'released'. */
  private holders = 0;
  private working = false;
  private lastAcquiredAt = NaN;
  private current: Grant | undefined;
  private violation: Error | undefined;

  constructor(
    readonly variant: Variant,
    quick: boolean,
  ) {
    this.grantsPerRun = quick ? variant.grants.quick : variant.grants.full;
    this.instanceOf = assignInstances(variant.contenders, variant.instances);
    this.services = Array.from({ length: variant.instances }, () => {
      const service = new LockService({ backends: { default: this.backend } });
      service.events$.subscribe((event) => this.onEvent(event));
      return service;
    });
  }

  /** Each harness batch (warm-up or timed run) is one window of grants. */
  readonly onBatch = (batch: BatchInfo): (() => void) => {
    this.open(batch.timed);
    return () => this.close();
  };

  /** One acquisition by contender `c`. */
  readonly acquireOnce = async (c: number): Promise<void> => {
    try {
      if (this.variant.reentry === 'event loop') await nextTurn();
      const calledAt = performance.now();
      this.window!.lastCallAt = calledAt;
      await this.services[this.instanceOf[c]!]!.using(HOT, () => this.critical(c, calledAt), USING);
    } catch (error) {
      // A violation seen first (two holders …) explains more than what it led to (e.g. a LockLostError).
      this.violation ??=
        error instanceof LockUnavailableError
          ? new Error(
              `Starvation: contender ${c} did not get ${HOT} within waitTimeout ${WAIT_TIMEOUT_MS} ms (${this.variant.name}).`,
            )
          : (error as Error);
    }
    if (this.violation) throw this.violation;
  };

  private async critical(c: number, calledAt: number): Promise<void> {
    const startAt = performance.now();
    if (this.working) this.fail(`contender ${c} entered the critical section while another holder was in it`);
    this.working = true;
    const grant: Grant = {
      contender: c,
      instance: this.instanceOf[c]!,
      calledAt,
      acquiredAt: this.lastAcquiredAt,
      startAt,
      endAt: NaN,
      releasedAt: NaN,
    };
    this.lastAcquiredAt = NaN;
    this.current = grant;
    this.window!.grants.push(grant);
    try {
      await this.variant.work.run();
    } finally {
      grant.endAt = performance.now();
      this.working = false;
    }
  }

  /** Subscribers run synchronously inside the library: mark, check, never throw here. */
  private onEvent(event: LockEvent): void {
    const at = performance.now();
    switch (event.type) {
      case 'acquired':
        if (++this.holders > 1) this.fail(`two holders of ${HOT} at once ('acquired' before the last 'released')`);
        this.lastAcquiredAt = at;
        break;
      case 'released':
        this.holders--;
        if (this.current) this.current.releasedAt = at;
        this.current = undefined;
        break;
      case 'failed':
        // A wait that ran out is reported by acquireOnce, as starvation.
        if (event.operation === 'acquire' && event.error instanceof LockUnavailableError) break;
        this.fail(`unexpected 'failed' event: ${event.error.message}`);
        break;
      case 'lost':
        this.fail(`unexpected '${event.type}' event: ${event.error.message}`);
        break;
      case 'extended':
        break;
    }
  }

  private fail(message: string): void {
    this.violation ??= new Error(`${this.variant.name}: ${message}`);
  }

  private open(timed: boolean): void {
    const now = performance.now();
    this.window = {
      timed,
      grants: [],
      openedAt: now,
      closedAt: NaN,
      lastCallAt: now,
      attempts: this.backend.attempts,
      waits: this.backend.waits,
    };
  }

  private close(): void {
    const window = this.window!;
    window.closedAt = performance.now();
    window.attempts = this.backend.attempts - window.attempts;
    window.waits = this.backend.waits - window.waits;
    if (window.timed) this.windows.push(window);
    this.window = undefined;
  }

  async dispose(): Promise<void> {
    await Promise.allSettled(this.services.map((s) => s.close()));
    await this.backend.close();
  }
}

/** Grants up to the first release after the run's last using() call: all contenders are still coming back. */
function steadyGrants(window: Window): Grant[] {
  const k = window.grants.findIndex((g) => g.releasedAt > window.lastCallAt);
  return k < 0 ? window.grants : window.grants.slice(0, k + 1);
}

interface Figures {
  readonly grants: number;
  readonly steadyGrants: number;
  /** ms */
  readonly handoff: readonly number[];
  readonly gap: readonly number[];
  readonly wait: readonly number[];
  readonly sameContender: number;
  readonly sameInstance: number;
  /** Share of each run's wall time some holder was inside the critical section. */
  readonly busyShare: number;
  readonly attemptsPerGrant: number;
  readonly waitsPerGrant: number;
  /** Steady-state grants per contender, summed over runs. */
  readonly perContender: readonly number[];
  /** Longest run of consecutive steady-state grants to one contender. */
  readonly longestStreak: number;
}

function figures(lock: ContendedLock): Figures {
  const { contenders } = lock.variant;
  const handoff: number[] = [];
  const gap: number[] = [];
  const wait: number[] = [];
  const perContender = new Array<number>(contenders).fill(0);
  let pairs = 0;
  let sameContender = 0;
  let sameInstance = 0;
  let busy = 0;
  let wall = 0;
  let attempts = 0;
  let waits = 0;
  let grants = 0;
  let steadyCount = 0;
  let longestStreak = 0;
  for (const w of lock.windows) {
    grants += w.grants.length;
    attempts += w.attempts;
    waits += w.waits;
    wall += w.closedAt - w.openedAt;
    for (const g of w.grants) {
      wait.push(g.startAt - g.calledAt);
      busy += g.endAt - g.startAt;
    }
    const steady = steadyGrants(w);
    steadyCount += steady.length;
    let streak = 0;
    for (let i = 0; i < steady.length; i++) {
      const g = steady[i]!;
      perContender[g.contender]!++;
      const prev = i > 0 ? steady[i - 1]! : undefined;
      streak = prev && prev.contender === g.contender ? streak + 1 : 1;
      longestStreak = Math.max(longestStreak, streak);
      if (!prev) continue;
      pairs++;
      handoff.push(g.acquiredAt - prev.releasedAt);
      gap.push(g.startAt - prev.endAt);
      if (prev.contender === g.contender) sameContender++;
      if (prev.instance === g.instance) sameInstance++;
    }
  }
  return {
    grants,
    steadyGrants: steadyCount,
    handoff,
    gap,
    wait,
    sameContender: pairs > 0 ? sameContender / pairs : NaN,
    sameInstance: pairs > 0 ? sameInstance / pairs : NaN,
    busyShare: wall > 0 ? busy / wall : NaN,
    attemptsPerGrant: grants > 0 ? attempts / grants : NaN,
    waitsPerGrant: grants > 0 ? waits / grants : NaN,
    perContender,
    longestStreak,
  };
}

const pct = (share: number): string => `${(share * 100).toFixed(share < 0.1 ? 1 : 0)} %`;

/** µs below 1 ms, else ms. */
function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  return ms < 1 ? `${formatUs(ms * 1000)} µs` : `${ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0)} ms`;
}

function p(values: readonly number[], q: number): string {
  return formatMs(percentile(values, q));
}

/**
 * Contenders with no steady-state grant in any run, or undefined when there were too few grants to tell: a fair
 * random order (not only FIFO) leaves one of C contenders out of S grants with probability C·(1 − 1/C)^S, and
 * that must stay below 1e-4 (S ≥ 186 for 16 contenders, 400 for 32).
 */
function starved(contenders: number, f: Figures): number[] | undefined {
  const needed = Math.log(1e-4 / contenders) / Math.log(1 - 1 / contenders);
  if (f.steadyGrants < needed) return undefined;
  return f.perContender.flatMap((n, c) => (n === 0 ? [c] : []));
}

export const memoryContentionScenario: Scenario = {
  name: 'memory-contention',
  title: `MemoryLockBackend, one hot key: contenders spread over ${INSTANCES} LockService instances`,
  tags: ['contention'],
  async setup({ quick }) {
    const locks = VARIANTS.map((v) => new ContendedLock(v, quick));
    const cases: BenchCase[] = locks.map((lock) => ({
      name: lock.variant.name,
      concurrency: lock.variant.contenders,
      iterations: lock.grantsPerRun,
      onBatch: lock.onBatch,
      op: lock.acquireOnce,
    }));

    return {
      baseline: BASELINE.name,
      cases,
      summarize(result) {
        const lines: SummaryLine[] = [
          {
            text:
              `grants per run fixed (M); handoff = holder's 'released' → next 'acquired' event, gap = critical ` +
              `section end → next start, wait = using() call → critical section start (all performance.now()); ` +
              `pooled over the timed runs, handoffs and re-takes in the steady state (the drain at a run's end left out)`,
          },
        ];
        const failures: string[] = [];
        const base = caseNamed(result, BASELINE.name);
        for (const lock of locks) {
          const row: CaseResult | undefined = result.cases.find((c) => c.name === lock.variant.name);
          if (!row || lock.windows.length === 0) continue;
          const f = figures(lock);
          const { contenders, instances } = lock.variant;
          lines.push({ text: `${lock.variant.name}:` });
          lines.push({
            text:
              `  ${formatRate(row.opsPerSec)} grants/s (${formatUs(row.median.meanUs)} µs per grant` +
              `${row === base || lock.variant.work !== BASELINE.work ? '' : `, ${(row.median.meanUs / base.median.meanUs).toFixed(1)}× uncontended`}); ` +
              `a holder was working ${pct(f.busyShare)} of the time`,
          });
          lines.push({
            text:
              `  handoff p50 ${p(f.handoff, 0.5)}, p99 ${p(f.handoff, 0.99)}; gap p50 ${p(f.gap, 0.5)}, p99 ${p(f.gap, 0.99)}; ` +
              `wait p50 ${p(f.wait, 0.5)}, p99 ${p(f.wait, 0.99)}, max ${p(f.wait, 1)}`,
          });
          if (contenders === 1) continue;
          const fair = f.steadyGrants / contenders;
          lines.push({
            text:
              `  next holder = the releasing contender ${pct(f.sameContender)} (chance ${pct(1 / contenders)}), ` +
              `its app instance ${pct(f.sameInstance)} (chance ${pct(1 / instances)}); ` +
              `longest streak ${f.longestStreak} grants in a row`,
          });
          const out = starved(contenders, f);
          lines.push({
            text:
              `  steady-state grants per contender ${Math.min(...f.perContender)}–${Math.max(...f.perContender)} ` +
              `(fair share ${fair.toFixed(0)}, median ${median(f.perContender).toFixed(0)})` +
              `${out && out.length > 0 ? ` — STARVED: ${out.length} of ${contenders} contenders got none in the steady state` : ''}; ` +
              `${f.attemptsPerGrant.toFixed(1)} acquire attempts and ${f.waitsPerGrant.toFixed(1)} waits per grant`,
          });
          if (out === undefined) {
            lines.push({ text: `  too few steady grants (${f.steadyGrants}) to judge starvation` });
          } else if (out.length > 0) {
            failures.push(
              `${lock.variant.name}: contenders ${out.join(', ')} never got the lock in the steady state ` +
                `(${f.steadyGrants} grants over ${lock.windows.length} runs)`,
            );
          }
        }
        // Fatal, with the figures: the harness prints no table for a scenario that throws.
        if (failures.length > 0) {
          throw new Error(`Starvation:\n${failures.join('\n')}\n${lines.map((l) => l.text).join('\n')}`);
        }
        return lines;
      },
      async dispose() {
        await Promise.allSettled(locks.map((lock) => lock.dispose()));
      },
    };
  },
};
