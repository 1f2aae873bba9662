import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { transformFileSync } from '@swc/core';

/**
 * A plain Node script (no Nest, no jest): the process must not exit while a caller awaits a lock call, and must
 * exit once nothing is pending. The library is compiled with swc into a temp dir and run by a child node.
 */
const root = join(__dirname, '..', '..');
let built: string;

function build(): string {
  const out = mkdtempSync(join(tmpdir(), 'attack-lib-'));
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) {
        const target = join(out, relative(root, path)).replace(/\.ts$/, '.js');
        mkdirSync(dirname(target), { recursive: true });
        const { code } = transformFileSync(path, {
          jsc: {
            target: 'es2022',
            parser: { syntax: 'typescript', decorators: true },
            transform: { legacyDecorator: true, decoratorMetadata: true },
          },
          module: { type: 'commonjs' },
        });
        writeFileSync(target, code);
      }
    }
  };
  walk(join(root, 'lib'));
  return out;
}

function run(body: string): { status: number | null; stdout: string; stderr: string; ms: number } {
  const file = join(built, `script-${Math.random().toString(36).slice(2)}.js`);
  writeFileSync(file, `const lib = require('./lib');\n(async () => {\n${body}\n})();\n`);
  const started = Date.now();
  const child = spawnSync(process.execPath, [file], {
    env: { ...process.env, NODE_PATH: join(root, 'node_modules') },
    encoding: 'utf8',
    timeout: 15_000,
  });
  return { status: child.status, stdout: child.stdout, stderr: child.stderr, ms: Date.now() - started };
}

beforeAll(() => {
  built = build();
}, 60_000);

describe('attack: a plain script', () => {
  it('waits for a busy key and runs the code after the await', () => {
    const r = run(`
      const locks = new lib.LockService({ backends: { default: new lib.MemoryLockBackend() } });
      const held = await locks.acquire('k');
      setTimeout(() => held.release(), 300);
      const lock = await locks.acquire('k', { waitTimeout: 2000 });
      console.log('got it');
      await lock.release();
      await locks.close();
    `);
    expect(r.stdout).toContain('got it');
    expect(r.status).toBe(0);
  });

  it('exits promptly once nothing is pending (watchdog of a held lock does not keep it alive after release)', () => {
    const r = run(`
      const locks = new lib.LockService({ backends: { default: new lib.MemoryLockBackend() } });
      await locks.using('k', async () => 1, { ttl: 60000 });
      await locks.using(['a', 'b'], async () => 1, { minHold: 1000, ttl: 60000 });
      await locks.close();
      console.log('done');
    `);
    expect(r.stdout).toContain('done');
    expect(r.ms).toBeLessThan(5_000);
  });

  it('close() with a lock still held (released at the end of its grace period) does not exit the script mid-await', () => {
    const r = run(`
      const locks = new lib.LockService({ backends: { default: new lib.MemoryLockBackend() }, shutdownTimeout: 500 });
      const lock = await locks.acquire('k');
      process.on('exit', (code) => { if (!globalThis.closed) console.log('EXITED MID-CLOSE with code ' + code); });
      await locks.close();
      globalThis.closed = true;
      console.log('closed; held=' + lock.isHeld);
    `);
    expect(r.stdout).toContain('closed; held=false');
  });

  it("using() whose work winds down on lock.signal (ref'd timer) finishes before close() returns", () => {
    const r = run(`
      const locks = new lib.LockService({ backends: { default: new lib.MemoryLockBackend() }, shutdownTimeout: 2000 });
      process.on('exit', (code) => { if (!globalThis.finished) console.log('EXITED with code ' + code + ' before the work ended'); });
      const work = locks.using('k', (lock) => new Promise((resolve) => {
        // Long work that stops when told to: it waits for the signal, then needs 100 ms to wind down.
        lock.signal.addEventListener('abort', () => setTimeout(() => resolve('wound down'), 100));
      }), { onLost: 'ignore' });
      await new Promise((r) => setTimeout(r, 10));
      await locks.close();
      console.log('work: ' + await work);
      globalThis.finished = true;
    `);
    expect(r.stdout).toContain('work: wound down');
  });

  it('a store acquire that never answers does not end the script silently (waitTimeout 0)', () => {
    const r = run(`
      const memory = new lib.MemoryLockBackend();
      const hung = Object.assign(Object.create(memory), { acquire: () => new Promise(() => {}) });
      const locks = new lib.LockService({ backends: { default: hung }, operationTimeout: 300 });
      process.on('exit', (code) => { if (!globalThis.settled) console.log('EXITED mid-acquire with code ' + code); });
      try { await locks.acquire('k'); } catch (e) { console.log('rejected: ' + e.code); }
      globalThis.settled = true;
    `);
    expect(r.stdout).toContain('rejected: LOCK_BACKEND');
  });
});
