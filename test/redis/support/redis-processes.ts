import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from './redis-env';

/**
 * redis-server processes a test starts, stops and restarts itself (the shared nodes of test/services/redis.sh
 * must stay up for the other suites). Each leaves a pidfile under $REDIS_STATE_DIR/spawned, so stop_redis ends
 * them even when the test run is killed before its afterAll.
 */
export class RedisProcesses {
  readonly ports: number[] = [];
  private readonly pids = new Map<number, number>();
  private readonly dir: string;

  constructor() {
    this.dir = join(process.env.REDIS_STATE_DIR ?? join(tmpdir(), 'nestjs-distributed-lock-redis'), 'spawned');
    mkdirSync(this.dir, { recursive: true });
  }

  async start(count: number): Promise<number[]> {
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      this.ports.push(port);
      await this.run(port);
    }
    return this.ports;
  }

  /** Kills the node at once (SIGKILL): its data is gone, as with a crash of a node without persistence. */
  async stop(port: number): Promise<void> {
    const pid = this.pids.get(port);
    if (pid === undefined) return;
    this.pids.delete(port);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(join(this.dir, `${port}.pid`), { force: true });
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(20);
  }

  /**
   * Freezes the node (SIGSTOP): its connections stay open and its port still accepts, but nothing answers — a
   * hung server, unlike a stopped one, which clients see fail at once. stop_pidfile resumes it before stopping.
   */
  pause(port: number): void {
    const pid = this.pids.get(port);
    if (pid !== undefined) process.kill(pid, 'SIGSTOP');
  }

  /** Lets a paused node run again (SIGCONT); what was sent to it meanwhile is answered then. */
  resume(port: number): void {
    const pid = this.pids.get(port);
    if (pid !== undefined) process.kill(pid, 'SIGCONT');
  }

  /** Starts the node again on its port, empty. */
  restart(port: number): Promise<void> {
    return this.run(port);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.pids.keys()].map((port) => this.stop(port)));
  }

  private async run(port: number): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir],
      { stdio: 'ignore', detached: false },
    );
    child.on('error', () => undefined);
    child.unref();
    if (child.pid === undefined) throw new Error('redis-server did not start: is it installed (Debian redis-server)?');
    this.pids.set(port, child.pid);
    writeFileSync(join(this.dir, `${port}.pid`), String(child.pid));
    for (let i = 0; i < 250; i++) {
      if (await accepts(port)) return;
      await sleep(20);
    }
    throw new Error(`redis-server on port ${port} did not accept connections within 5 s`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

async function accepts(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
