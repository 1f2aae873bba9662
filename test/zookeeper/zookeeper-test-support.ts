import { spawnSync } from 'node:child_process';
import { TcpLink as FlakyLink } from '../support/tcp-link';
import { createClient, type Client, type Option, type Stat } from 'node-zookeeper-client';

/** Where the standalone test server listens; fails loudly (never skips) when it was not started. */
export function zookeeperConnect(): string {
  return requireEnv('ZOOKEEPER_CONNECT');
}

export function requireEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: start the test ZooKeeper servers first — ` +
        `source test/services/lib.sh && source test/services/zookeeper.sh && start_zookeeper — or run npm test.`,
    );
  }
  return value;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or undefined after `ms` — whichever comes first; the timer never outlives it. */
export async function within<T>(ms: number, promise: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A connected raw client, to look at and poke znodes from outside the backend. */
export async function rawClient(connect: string, options: Partial<Option> = {}): Promise<Client> {
  const client = createClient(connect, { sessionTimeout: 2_000, ...options });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ZooKeeper session at ${connect} within 15 s`)), 15_000);
    client.once('connected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.connect();
  });
  return client;
}

export function children(client: Client, path: string): Promise<string[]> {
  return new Promise((resolve, reject) =>
    client.getChildren(path, (error, names) => {
      if (error && 'getCode' in error && error.getCode() === -101) resolve([]);
      else if (error) reject(error);
      else resolve(names);
    }),
  );
}

export function exists(client: Client, path: string): Promise<Stat | null> {
  return new Promise((resolve, reject) =>
    client.exists(path, (error, stat) => (error ? reject(error) : resolve(stat ?? null))),
  );
}

/**
 * Ends the session of `client`, which reaches the server through `link`, the way ZooKeeper's own tests do: a
 * second client joins the same session (id and password) and closes it, so the server deletes the session's
 * ephemeral nodes at once. Meanwhile the link is held and cut, so `client` cannot win its session back first;
 * when the link passes again, `client` reconnects and is told EXPIRED. Resolves once it has heard that.
 */
export async function expireSession(connect: string, client: Client, link: FlakyLink): Promise<void> {
  const expired = new Promise<void>((resolve) => client.once('expired', () => resolve()));
  link.hold();
  link.cut();
  const twin = await rawClient(connect, {
    sessionTimeout: client.getSessionTimeout(),
    sessionId: client.getSessionId(),
    sessionPassword: client.getSessionPassword(),
  } as Partial<Option>);
  await new Promise<void>((resolve) => {
    twin.once('disconnected', () => resolve());
    twin.close();
  });
  link.pass();
  if (
    (await within(
      15_000,
      expired.then(() => true),
    )) !== true
  ) {
    throw new Error('the client was not told its ZooKeeper session expired within 15 s');
  }
}

/** One four-letter-word command (srvr, mntr, wchc…) against 127.0.0.1:port; its reply. */
export function fourLetters(port: number, command: string): string {
  const script = `exec 3<>/dev/tcp/127.0.0.1/${port} && echo ${command} >&3 && cat <&3`;
  return spawnSync('bash', ['-c', script], { encoding: 'utf8', timeout: 5_000 }).stdout;
}

/** Closes a raw client and waits until its socket is gone (or 3 s), so the test process can exit. */
export async function closeClient(client: Client): Promise<void> {
  const state = client.getState().name;
  if (state !== 'SYNC_CONNECTED' && state !== 'CONNECTED_READ_ONLY') {
    client.close();
    return;
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 3_000);
    client.once('disconnected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.close();
  });
}

/** A TCP proxy in front of a ZooKeeper server, to play network trouble without touching the server. */
export { FlakyLink };

/** Retries `check` (which throws while its condition does not hold) until it passes or `ms` run out. */
export async function eventually(check: () => Promise<void>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(25);
    }
  }
}
