// A separate process that waits in line for a busy key through the real backend, to be killed (SIGKILL) while it
// waits: its place stays behind, and the line must move on without it. Loads the TypeScript sources through
// @swc/core, as test/redis/support/holder-child.js does.
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

const [port, key] = process.argv.slice(2);
const { LockService } = require('../../lib/index.ts');
const { RedlockBackend } = require('../../lib/backends/redis/index.ts');

(async () => {
  const backend = new RedlockBackend({ nodes: [{ host: '127.0.0.1', port: Number(port) }] });
  const locks = new LockService({ backends: { default: backend } });
  await locks.acquire(key, { waitTimeout: 60_000 });
  process.stdout.write('acquired\n');
})().catch((error) => {
  process.stdout.write(`failed ${error.message}\n`);
  process.exit(1);
});
