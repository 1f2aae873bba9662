// The test environment of every test file: Node's, plus one clean-up between files.
//
// On 2 cores Jest runs every test file in one process, one after the other, and loads the test framework and the
// library afresh for each. Every AsyncLocalStorage that was ever used stays enabled unless someone disables it,
// and on Node 20 each enabled one adds work to every promise of the process, for good: Jest's own test-context
// storage (jest-circus, one per file) and any a file leaves behind pile up until the late files crawl (measured
// on this project: the PostgreSQL contract took 240 s after 60 files, 34 s alone, a third of its CPU in async
// context propagation). So the storages a file used are disabled once it is done; disable() only drops their
// hook (a later run() enables a storage again), so nothing a later file does depends on it.
const { AsyncLocalStorage } = require('node:async_hooks');
const { TestEnvironment } = require('jest-environment-node');

let usedByThisFile = new Set();
const trackedMethods = ['run', 'enterWith'];
const TRACKED = Symbol.for('nestjs-distributed-lock.test.trackedStorage');
if (!AsyncLocalStorage.prototype[TRACKED]) {
  AsyncLocalStorage.prototype[TRACKED] = true;
  for (const name of trackedMethods) {
    const original = AsyncLocalStorage.prototype[name];
    AsyncLocalStorage.prototype[name] = function (...args) {
      usedByThisFile.add(this);
      return original.apply(this, args);
    };
  }
}

class LockTestEnvironment extends TestEnvironment {
  async setup() {
    usedByThisFile = new Set();
    await super.setup();
  }

  async teardown() {
    for (const storage of usedByThisFile) storage.disable();
    usedByThisFile = new Set();
    await super.teardown();
  }
}

module.exports = LockTestEnvironment;
