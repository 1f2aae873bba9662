import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import request from 'supertest';
import { redisPorts } from '../redis/support/redis-env';
import { type SampleProcess, startSample } from './sample-process';

/**
 * Two sample instances as separate processes, as a user would run them (`npm run sample` twice, different
 * PORTs), sharing one SQLite file for the shop's data: with the locks in that file too (the default setup, with
 * no server), and with the locks on five Redis masters (Redlock).
 */
const REPORT_EVERY_MS = 1_000;
/** The sample's minHold for the report job: half a period. */
const REPORT_MIN_HOLD_MS = REPORT_EVERY_MS / 2;
/** Timestamps are taken a moment after the lock is granted; the two instances share this machine's clock. */
const TIMESTAMP_SLACK_MS = 100;
const CARD = { card: '4242424242424242' };

interface JobRun {
  readonly instance: string;
  readonly at: number;
}

interface LockEventView {
  readonly type: string;
  readonly keys: readonly string[];
}

beforeAll(async () => {
  // The same build `npm run sample` makes, once for every store below.
  await promisify(execFile)(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'sample/tsconfig.json'], {
    cwd: join(__dirname, '..', '..'),
  });
}, 60_000);

const lockStores: readonly (readonly [string, () => Record<string, string>])[] = [
  ['the locks in that file too (default)', () => ({ LOCK_BACKEND: 'sqlite' })],
  [
    'the locks on 5 Redis masters (Redlock)',
    () => ({
      LOCK_BACKEND: 'redis',
      LOCK_REDIS: redisPorts(5)
        .map((port) => `redis://127.0.0.1:${port}`)
        .join(','),
    }),
  ],
];

describe.each(lockStores)('two sample instances sharing one SQLite file, %s', (_store, lockEnv) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sample-instances-'));
  const databaseFile = join(dataDir, 'sample.sqlite');
  const instances: SampleProcess[] = [];

  const readDb = <Row>(sql: string, ...params: unknown[]): Row[] => {
    const db = new Database(databaseFile, { readonly: true });
    try {
      return db.prepare(sql).all(...params) as Row[];
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    const env = (instance: string) => ({
      // Said out loud, whatever this test process's environment says.
      ...lockEnv(),
      SAMPLE_DB_FILE: databaseFile,
      SAMPLE_INSTANCE: instance,
      SAMPLE_REPORT_EVERY_MS: String(REPORT_EVERY_MS),
      // Long enough that 50 requests sent together all arrive while the first payment still runs.
      SAMPLE_WORK_MS: '1500',
    });
    const started = await Promise.allSettled([startSample(env('a')), startSample(env('b'))]);
    for (const outcome of started) if (outcome.status === 'fulfilled') instances.push(outcome.value);
    const failed = started.find((outcome) => outcome.status === 'rejected');
    if (failed) throw failed.reason;
  }, 60_000);

  afterAll(async () => {
    await Promise.all(instances.map((instance) => instance.stop()));
    rmSync(dataDir, { recursive: true, force: true });
  }, 20_000);

  it('pays an order once when 50 payments of it hit both instances at once; the others get 409', async () => {
    const responses = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        request(instances[i % 2]!.url)
          .post('/orders/500/pay')
          .send(CARD),
      ),
    );

    const statuses = responses.map((res) => res.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    expect(statuses.filter((status) => status === 409)).toHaveLength(49);
    const busy = responses.filter((res) => res.body.code === 'LOCK_UNAVAILABLE');
    // Most are refused by the lock (a late one may find the order paid instead), each with a retry hint.
    expect(busy.length).toBeGreaterThan(0);
    for (const res of busy) expect(res.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    for (const res of responses.filter((r) => r.status === 409 && r.body.code !== 'LOCK_UNAVAILABLE')) {
      expect(res.body.code).toBe('ORDER_ALREADY_PAID');
    }

    // Charged once (the gateway's log), and the order records the token of the payment that succeeded.
    const winner = responses.find((res) => res.status === 200)!;
    expect(
      readDb('SELECT order_id, CAST(fencing_token AS TEXT) AS token FROM payments WHERE order_id = ?', '500'),
    ).toEqual([{ order_id: '500', token: winner.body.fencingToken }]);
    expect((await request(instances[0]!.url).get('/orders/500').expect(200)).body).toMatchObject({
      paidWithToken: winner.body.fencingToken,
    });
  });

  it('runs the report job once per period across both instances, though both schedule it', async () => {
    const periods = 5;
    const runsOver = (fromAt: number): JobRun[] =>
      readDb<JobRun>("SELECT instance, at FROM job_runs WHERE job = 'report' AND at >= ? ORDER BY at", fromAt);
    // Watch from the first run seen now on, until `periods` whole periods have passed after it.
    const start = await pollUntil(() => runsOver(0).at(-1), 10_000);
    const until = start.at + periods * REPORT_EVERY_MS;
    await pollUntil(() => runsOver(until)[0], (periods + 3) * REPORT_EVERY_MS);

    const runs = runsOver(start.at).filter((run) => run.at < until);
    // Both instances fire every period; without the lock that would be 2 × periods runs.
    expect(runs.length).toBeGreaterThanOrEqual(periods - 1);
    expect(runs.length).toBeLessThanOrEqual(periods + 1);
    // minHold keeps the key half a period: no two runs, by whichever instance, come closer than that.
    const gaps = runs.slice(1).map((run, i) => run.at - runs[i]!.at);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(REPORT_MIN_HOLD_MS - TIMESTAMP_SLACK_MS);

    // Both instances did try: the one that found the key taken skipped (a failed acquisition, nothing run).
    const reportEvents = await Promise.all(
      instances.map(async (instance) => {
        const { recent } = (await request(instance.url).get('/locks').expect(200)).body as { recent: LockEventView[] };
        return recent.filter((event) => event.keys.includes('jobs:report')).map((event) => event.type);
      }),
    );
    for (const types of reportEvents) expect(types.length).toBeGreaterThan(0);
    expect(reportEvents.flat()).toContain('failed');
  }, 30_000);
});

describe('a sample instance with a bad lock store setting', () => {
  it('refuses to start on an unknown LOCK_BACKEND or a store without its address, saying what to set', async () => {
    const databaseFile = join(tmpdir(), `sample-refused-${process.pid}.sqlite`);
    await expect(startSample({ SAMPLE_DB_FILE: databaseFile, LOCK_BACKEND: 'mongo' })).rejects.toThrow(
      /LOCK_BACKEND must be one of sqlite, memory, postgres, zookeeper, redis; got "mongo"/,
    );
    await expect(startSample({ SAMPLE_DB_FILE: databaseFile, LOCK_BACKEND: 'postgres' })).rejects.toThrow(
      /LOCK_BACKEND=postgres needs LOCK_POSTGRES_URL/,
    );
    await expect(startSample({ SAMPLE_DB_FILE: databaseFile, LOCK_BACKEND: 'redis' })).rejects.toThrow(
      /LOCK_BACKEND=redis needs LOCK_REDIS/,
    );
    rmSync(databaseFile, { force: true });
  });
});

/** Polls `probe` every 50 ms until it returns something, or fails at the deadline. */
async function pollUntil<T>(probe: () => T | undefined, withinMs: number): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const found = probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
