// A plain Node script (no Nest, no jest) using the Redis backend the way the README shows, run as its own process
// by redis-script-exit.spec.ts: it must run to its end and then exit by itself. Loads the TypeScript sources
// through @swc/core, as test/redis/support/holder-child.js does. Usage: node redis-script-child.js SCENARIO
const { readFileSync } = require('node:fs');
const swc = require('@swc/core');

require.extensions['.ts'] = (module, filename) => {
  const { code } = swc.transformSync(readFileSync(filename, 'utf8'), {
    filename,
    jsc: {
      target: 'es2022',
      parser: { syntax: 'typescript', decorators: true },
      transform: { legacyDecorator: true, decoratorMetadata: true },
    },
    module: { type: 'commonjs' },
  });
  module._compile(code, filename);
};

const Redis = require('ioredis');
const { LockService } = require('../../lib/index.ts');
const { RedlockBackend } = require('../../lib/backends/redis/index.ts');

const ports = process.env.REDIS_PORTS.split(',').slice(0, 3).map(Number);
const key = `script-exit:${process.pid}:${Date.now()}`;
const nodes = ports.map((port) => ({ host: '127.0.0.1', port }));

const scenarios = {
  // The README's form: the user's clients, a backend instance; the user closes the service and their clients.
  async clients() {
    const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port }));
    const locks = new LockService({ backends: { default: new RedlockBackend({ clients }) } });
    await locks.using(key, async () => undefined);
    await locks.close();
    await Promise.all(clients.map((c) => c.quit()));
  },
  // Nodes the backend connects itself, made by a factory: the service owns the backend and closes it.
  async factory() {
    const locks = new LockService({ backends: { default: () => new RedlockBackend({ nodes }) } });
    await locks.using(key, async () => undefined);
    await locks.close();
  },
  // Nodes the backend connects itself, as an instance: the user closes the service, then the backend.
  async instance() {
    const backend = new RedlockBackend({ nodes });
    const locks = new LockService({ backends: { default: backend } });
    await locks.using(key, async () => undefined);
    await locks.close();
    await backend.close();
  },
  // A wait on a busy key: the process must not end while the caller awaits it, and must end after.
  async waiter() {
    const backend = new RedlockBackend({ nodes });
    const locks = new LockService({ backends: { default: backend } });
    const held = await locks.acquire(key);
    setTimeout(() => void held.release(), 300).unref();
    const lock = await locks.acquire(key, { waitTimeout: 5_000 });
    process.stdout.write('waited\n');
    await lock.release();
    await locks.close();
    await backend.close();
  },
};

process.on('exit', (code) => {
  if (!globalThis.finished) process.stdout.write(`exited with code ${code} before the end\n`);
});
scenarios[process.argv[2]]().then(
  () => {
    globalThis.finished = true;
    process.stdout.write('done\n');
  },
  (error) => {
    globalThis.finished = true;
    process.stdout.write(`failed ${error.stack}\n`);
    process.exitCode = 1;
  },
);
