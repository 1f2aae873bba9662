/**
 * A plain Node script (no Nest, no jest) on the TypeORM backend over one SQLite file, run as its own process by
 * sqlite-init-attack.spec.ts through test/typeorm/run-ts.js. Settings come from the environment:
 * - CHILD_FILE: the SQLite file; CHILD_SCENARIO: 'script' or 'race'.
 * - 'script': `backend.init()` without a signal, one lock taken and given back, `close()`; must then exit by
 *   itself. Prints 'started' after init and 'done' at its end; 'exited before the end' if the process ends
 *   with init (or anything after it) still pending.
 * - 'race': CHILD_ROUNDS rounds, round r on the file `CHILD_FILE.r`: waits for `go <ms>` on stdin, then each
 *   round at `ms + r * CHILD_SLOT_MS` (so that every child opens the round's file at the same moment) starts a
 *   backend with `enableWAL`, takes one key CHILD_TAKES times, appending `enter <id> <token>` and `exit <id>`
 *   to `CHILD_FILE.r.log` while it holds it, and closes. Prints `round <r> attempts <a> fds <n>`: how many
 *   connections init opened, and how many descriptors the process has open on the file after it.
 */
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { LockService } from '../../lib';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { descriptorsOn } from '../support/open-descriptors';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`sqlite-init-child: ${name} is not set`);
  return value;
};

const file = env('CHILD_FILE');
let finished = false;
process.on('exit', () => {
  if (!finished) process.stdout.write('exited before the end\n');
});

async function script(): Promise<void> {
  const backend = new TypeOrmLockBackend({
    connection: { type: 'better-sqlite3', database: file, timeout: 20 },
    createTable: true,
  });
  process.stdout.write('initialising\n');
  await backend.init();
  process.stdout.write('started\n');
  const locks = new LockService({ backends: { default: backend } });
  await locks.using('script-key', async () => undefined);
  await locks.close();
  await backend.close();
}

async function race(): Promise<void> {
  const id = env('CHILD_ID');
  const rounds = Number(env('CHILD_ROUNDS'));
  const takes = Number(env('CHILD_TAKES'));
  const slotMs = Number(env('CHILD_SLOT_MS'));
  const goAt = await new Promise<number>((resolve) => {
    process.stdin.on('data', (chunk: Buffer) => {
      const go = /go (\d+)/.exec(chunk.toString());
      if (go) resolve(Number(go[1]));
    });
    process.stdout.write('ready\n');
  });
  process.stdin.pause();
  // Like an app instance, whose server keeps it alive: whether init alone keeps a process alive is the
  // 'script' scenario's question, not this one's.
  const keepAlive = setInterval(() => undefined, 60_000);
  for (let round = 0; round < rounds; round++) {
    const roundFile = `${file}.${round}`;
    const log = `${roundFile}.log`;
    let attempts = 0;
    const backend = new TypeOrmLockBackend({
      connection: {
        type: 'better-sqlite3',
        database: roundFile,
        enableWAL: true,
        // Called once per connection TypeORM opens: counts the attempts to connect.
        prepareDatabase: () => void attempts++,
      },
      createTable: true,
    });
    const locks = new LockService({ backends: { default: backend } });
    // Every child opens the round's file in the same millisecond (sleeping first: two cores, several children).
    const at = goAt + round * slotMs;
    if (at - Date.now() > 5) await sleep(at - Date.now() - 5);
    while (Date.now() < at);
    await backend.init();
    process.stdout.write(`round ${round} attempts ${attempts} fds ${descriptorsOn(roundFile)}\n`);
    for (let take = 0; take < takes; take++) {
      const lock = await locks.acquire('race-key', { ttl: 10_000, waitTimeout: 20_000 });
      appendFileSync(log, `enter ${id} ${lock.fencingToken}\n`);
      await sleep(2);
      appendFileSync(log, `exit ${id}\n`);
      await lock.release();
    }
    await locks.close();
    await backend.close();
  }
  clearInterval(keepAlive);
}

const scenario = env('CHILD_SCENARIO');
(scenario === 'race' ? race() : script()).then(
  () => {
    finished = true;
    process.stdout.write('done\n');
  },
  (error: unknown) => {
    finished = true;
    process.stdout.write(`failed ${String((error as Error)?.stack ?? error)}\n`);
    process.exitCode = 1;
  },
);
