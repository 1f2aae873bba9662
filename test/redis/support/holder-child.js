// A separate process that takes a lock through the real backend and then waits to be killed (SIGKILL), so a
// test can see the key freed by its ttl alone. Loads the TypeScript sources through @swc/core.
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

const [port, key, ttl] = process.argv.slice(2);
const { LockService } = require('../../../lib/index.ts');
const { RedlockBackend } = require('../../../lib/backends/redis/index.ts');

(async () => {
  const backend = new RedlockBackend({ nodes: [{ host: '127.0.0.1', port: Number(port) }] });
  await backend.init(new AbortController().signal);
  const locks = new LockService({ backends: { default: backend } });
  const lock = await locks.acquire(key, { ttl: Number(ttl), autoExtend: false });
  process.stdout.write(`held ${lock.fencingToken}\n`);
  setInterval(() => undefined, 1_000);
})().catch((error) => {
  process.stdout.write(`failed ${error.message}\n`);
  process.exit(1);
});
