import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'node-zookeeper-client';
import { LockService, systemClock } from '../../lib';
import { ZooKeeperLockBackend } from '../../lib/backends/zookeeper';
import { closeClient, rawClient, requireEnv, zookeeperConnect } from './zookeeper-test-support';

const ROUNDS = 150;

/** Runs Apache Curator's InterProcessMutex (test/zookeeper/interop/CuratorContender.java) as a separate JVM. */
class CuratorContender {
  private readonly process: ChildProcess;
  private output = '';
  readonly ready: Promise<void>;
  readonly done: Promise<{ rounds: number; overlaps: number }>;

  constructor(classes: string, classpath: string, connect: string, lockPath: string, guard: string) {
    this.process = spawn(
      'java',
      ['-cp', `${classes}:${classpath}`, 'CuratorContender', connect, lockPath, guard, `${ROUNDS}`],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    this.process.stderr!.on('data', (data: Buffer) => (stderr += data.toString()));
    const lines = new Promise<void>((resolve) => this.process.stdout!.on('end', resolve));
    this.ready = new Promise((resolve, reject) => {
      this.process.stdout!.on('data', (data: Buffer) => {
        this.output += data.toString();
        if (this.output.includes('ready')) resolve();
      });
      this.process.once('exit', () => reject(new Error(`Curator contender ended before it was ready: ${stderr}`)));
    });
    this.done = new Promise((resolve, reject) => {
      this.process.once('exit', async (code) => {
        await lines;
        const match = /done (\d+) overlaps (\d+)/.exec(this.output);
        if (code !== 0 || !match) reject(new Error(`Curator contender failed (exit ${code}): ${stderr}`));
        else resolve({ rounds: Number(match[1]), overlaps: Number(match[2]) });
      });
    });
  }

  kill(): void {
    this.process.kill('SIGKILL');
  }
}

describe('ZooKeeper interoperability with Apache Curator', () => {
  const connect = zookeeperConnect();
  const classpath = requireEnv('ZOOKEEPER_CURATOR_CLASSPATH');
  let classes: string;
  let guardian: Client;

  beforeAll(async () => {
    classes = mkdtempSync(join(tmpdir(), 'curator-interop-'));
    const javac = spawnSync(
      'javac',
      ['-d', classes, '-cp', classpath, join(__dirname, 'interop/CuratorContender.java')],
      { encoding: 'utf8' },
    );
    if (javac.status !== 0) throw new Error(`javac failed: ${javac.stderr || javac.error}`);
    guardian = await rawClient(connect, { sessionTimeout: 10_000 });
  }, 60_000);
  afterAll(async () => {
    await closeClient(guardian);
    rmSync(classes, { recursive: true, force: true });
  });

  it("excludes Curator's InterProcessMutex on the same path: 600 contended acquisitions, 0 overlaps", async () => {
    const rootPath = `/interop-${randomUUID()}`;
    const guard = `/interop-guard-${randomUUID()}`;
    const backends = [0, 1].map(
      () => new ZooKeeperLockBackend({ connectionString: connect, rootPath, sessionTimeout: 10_000 }),
    );
    await Promise.all(backends.map((b) => b.init(AbortSignal.timeout(15_000))));
    const lockPath = backends[0]!.lockPath('shared');
    const java = [0, 1].map(() => new CuratorContender(classes, classpath, connect, lockPath, guard));
    try {
      await Promise.all(java.map((j) => j.ready));
      // Inside the lock each side creates the same ephemeral guard node: finding it there means two holders.
      let overlaps = 0;
      const enter = (): Promise<boolean> =>
        new Promise((resolve, reject) =>
          guardian.create(guard, 1 /* EPHEMERAL */, (error) => {
            if (!error) resolve(true);
            else if ('getCode' in error && error.getCode() === -110 /* NODE_EXISTS */) resolve(false);
            else reject(error);
          }),
        );
      const leave = (): Promise<void> =>
        new Promise((resolve, reject) => guardian.remove(guard, (error) => (error ? reject(error) : resolve())));
      const tokens: bigint[] = [];
      const nest = backends.map(async (backend) => {
        const locks = new LockService({ backends: { default: backend }, clock: systemClock });
        for (let round = 0; round < ROUNDS; round++) {
          await locks.using(
            'shared',
            async (lock) => {
              tokens.push(lock.fencingToken);
              if (await enter()) await leave();
              else overlaps++;
            },
            { waitTimeout: 60_000 },
          );
        }
        await locks.close();
      });
      await Promise.all(nest);
      const curator = await Promise.all(java.map((j) => j.done));
      expect(curator.map((c) => c.rounds)).toEqual([ROUNDS, ROUNDS]);
      expect(curator.map((c) => c.overlaps)).toEqual([0, 0]);
      expect(overlaps).toBe(0);
      expect(tokens).toHaveLength(2 * ROUNDS);
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    } finally {
      for (const j of java) j.kill();
      await Promise.all(backends.map((b) => b.close()));
    }
  }, 120_000);
});
