/**
 * The Redis nodes of test/services/redis.sh (REDIS_PORTS), shared with whoever else uses them: every scenario
 * works under a key prefix with a random UUID and deletes only the keys under it. Clients count the commands
 * they send, so a row's figures say how many round trips its library makes, beside what INFO commandstats
 * says the server executed (which also counts every call a Lua script makes).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import Redis, { type Command } from 'ioredis';
import { BenchSkip, median } from '../../harness';

/** The ports of the first `count` nodes; BenchSkip when the services are not running. */
export function redisPorts(count: number): number[] {
  const raw = process.env.REDIS_PORTS;
  if (!raw) throw new BenchSkip('REDIS_PORTS is not set (start test/services/redis.sh)');
  const ports = raw
    .split(',')
    .map((p) => Number(p.trim()))
    .filter((p) => Number.isInteger(p) && p > 0);
  if (ports.length < count) {
    throw new BenchSkip(
      `REDIS_PORTS lists ${ports.length} node(s), this scenario needs ${count} (REDIS_NODES=${count})`,
    );
  }
  return ports.slice(0, count);
}

/** Commands by name (lower case), added up. */
export type CommandCounts = Map<string, number>;

export function addCounts(into: CommandCounts, from: ReadonlyMap<string, number>, sign = 1): CommandCounts {
  for (const [name, n] of from) into.set(name, (into.get(name) ?? 0) + sign * n);
  return into;
}

export function totalOf(counts: ReadonlyMap<string, number>): number {
  let total = 0;
  for (const n of counts.values()) total += n;
  return total;
}

/** "evalsha 2.00, set 1.00": the largest counts first, each divided by `per`. */
export function breakdown(counts: ReadonlyMap<string, number>, per: number, top = 4): string {
  const rows = [...counts].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  const shown = rows.slice(0, top).map(([name, n]) => `${name} ${(n / per).toFixed(2)}`);
  if (rows.length > top) shown.push(`${rows.length - top} more`);
  return shown.join(', ') || 'none';
}

/**
 * Makes every command `client` sends — and those of the connections it duplicates, such as the backend's
 * subscriber connection — add to `counts`.
 */
function countCommands(client: Redis, counts: CommandCounts): void {
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: Command, stream?: Parameters<Redis['sendCommand']>[1]) => {
    counts.set(command.name, (counts.get(command.name) ?? 0) + 1);
    return send(command, stream);
  }) as Redis['sendCommand'];
  const duplicate = client.duplicate.bind(client);
  client.duplicate = ((override?: Parameters<Redis['duplicate']>[0]) => {
    const copy = duplicate(override);
    countCommands(copy, counts);
    return copy;
  }) as Redis['duplicate'];
}

/** The clients of one scenario: opened connected, counted, all closed by close(). */
export class RedisClients {
  /** Everything the counted clients (and their duplicates) sent. */
  readonly sent: CommandCounts = new Map();
  /** Unique per scenario instance: every key this scenario touches starts with it. */
  readonly prefix = `bench:${randomUUID()}:`;
  private readonly opened: Redis[] = [];
  /** One uncounted client per node, for INFO, PING and the clean-up. */
  private readonly admin = new Map<number, Redis>();

  constructor(readonly ports: readonly number[]) {}

  /** A client on `port` counting into `counts`, connected (it fails fast if the node is gone). */
  async open(port: number, counts: CommandCounts = this.sent): Promise<Redis> {
    const client = this.connect(port);
    this.opened.push(client);
    countCommands(client, counts);
    await client.ping();
    return client;
  }

  /** A counted client on each of the scenario's nodes. */
  openAll(counts: CommandCounts = this.sent): Promise<Redis[]> {
    return Promise.all(this.ports.map((port) => this.open(port, counts)));
  }

  /**
   * Sums of INFO commandstats over the scenario's nodes, by command, without INFO itself: calls, and µs the
   * servers spent in them (a script's own time includes the calls it makes).
   */
  async commandStats(): Promise<{ readonly calls: CommandCounts; readonly usec: CommandCounts }> {
    const texts = await Promise.all(this.ports.map((port) => this.adminOf(port).info('commandstats')));
    const calls: CommandCounts = new Map();
    const usec: CommandCounts = new Map();
    for (const text of texts) {
      for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
        const name = match[1]!;
        if (name === 'info') continue;
        calls.set(name, (calls.get(name) ?? 0) + Number(match[2]));
        usec.set(name, (usec.get(name) ?? 0) + Number(match[3]));
      }
    }
    return { calls, usec };
  }

  /** Median PING round trip to the first node through ioredis, in ms. */
  async roundTripMs(samples: number): Promise<number> {
    const client = this.adminOf(this.ports[0]!);
    const times: number[] = [];
    for (let i = 0; i < samples; i++) {
      const started = performance.now();
      await client.ping();
      times.push(performance.now() - started);
    }
    return median(times);
  }

  /** Deletes this scenario's keys on every node and closes every client it opened. */
  async close(): Promise<void> {
    await Promise.allSettled(this.ports.map((port) => this.deleteKeys(this.adminOf(port))));
    const all = [...this.opened, ...this.admin.values()];
    await Promise.allSettled(
      all.map(async (client) => {
        if (client.status !== 'ready') return client.disconnect();
        await client.quit().catch(() => client.disconnect());
      }),
    );
  }

  private async deleteKeys(client: Redis): Promise<void> {
    // MATCH on the prefix only: derived keys (a lock's fencing counter, its line) start with the lock key.
    const pattern = `*${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== '0');
  }

  private adminOf(port: number): Redis {
    let client = this.admin.get(port);
    if (!client) {
      client = this.connect(port);
      this.admin.set(port, client);
    }
    return client;
  }

  private connect(port: number): Redis {
    const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
    // A node that goes away fails the row's calls; the error event itself must not crash the process.
    client.on('error', () => undefined);
    return client;
  }
}
