import { spawn } from 'node:child_process';
import { join } from 'node:path';

const MAIN = join(__dirname, '..', '..', 'dist-sample', 'sample', 'main.js');

/** A sample instance running as its own process, as `npm run sample` starts it (after tsc). */
export interface SampleProcess {
  readonly url: string;
  /** What it printed, for a failing test's message. */
  output(): string;
  /** SIGTERM (the sample's graceful shutdown), then SIGKILL if it has not exited by the deadline. */
  stop(): Promise<void>;
}

/** Starts `node dist-sample/sample/main.js` on a free port and resolves once it listens. */
export function startSample(env: Readonly<Record<string, string>>, readyWithinMs = 20_000): Promise<SampleProcess> {
  const child = spawn(process.execPath, [MAIN], {
    env: { ...process.env, ...env, PORT: '0', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // If jest itself dies, do not leave an instance behind holding its port and the SQLite file.
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    if (!(await settlesWithin(exited, 8_000))) child.kill('SIGKILL');
    await exited;
  };
  return new Promise<SampleProcess>((resolve, reject) => {
    const fail = (reason: string): void => {
      clearTimeout(deadline);
      void stop().then(() => reject(new Error(`${reason}\n--- sample output ---\n${output}`)));
    };
    const deadline = setTimeout(() => fail(`the sample did not listen within ${readyWithinMs} ms`), readyWithinMs);
    const exitedEarly = (code: number | null, signal: string | null): void =>
      fail(`the sample exited (code ${code}, signal ${signal}) before listening`);
    const read = (chunk: Buffer): void => {
      output += chunk.toString();
      const listening = /Listening on (http:\/\/\S+)/.exec(output);
      if (listening) {
        clearTimeout(deadline);
        child.removeListener('exit', exitedEarly);
        resolve({ url: listening[1]!, output: () => output, stop });
      }
    };
    child.stdout!.on('data', read);
    child.stderr!.on('data', read);
    child.once('exit', exitedEarly);
  });
}

/** Whether `promise` settles before `ms` pass; the timer never outlives the answer. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
