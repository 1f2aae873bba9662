// Runs a TypeScript file in a child process without a build: compiles each .ts on require with @swc/core,
// the compiler jest already uses. Usage: node test/typeorm/run-ts.js file.ts
const { transformFileSync } = require('@swc/core');

require.extensions['.ts'] = (module, filename) => {
  const { code } = transformFileSync(filename, {
    jsc: { target: 'es2022', parser: { syntax: 'typescript', decorators: true } },
    module: { type: 'commonjs' },
  });
  module._compile(code, filename);
};
require(require('node:path').resolve(process.argv[2]));
