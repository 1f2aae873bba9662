import { createServer, connect, type Server, type Socket } from 'node:net';
import { LockBackendError } from '../../lib';
import type { ConnectionChange } from '../../lib/backends/lock-backend';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { serverUrl, TestTable } from './sql-fixture';

/** A TCP relay to the real server that the test can cut and restore: the database "goes away" and comes back. */
class Relay {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: URL) {}

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(Number(this.target.port), this.target.hostname);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => {
          this.sockets.delete(socket);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  async down(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }
}

describe.each(['postgres', 'mariadb'] as const)('connection state in lease mode (%s)', (database) => {
  it('reports suspended when the database cannot be reached and reconnected when it answers again', async () => {
    const table = await TestTable.create(database, 'conn');
    const target = new URL(serverUrl(database));
    const relay = new Relay(target);
    await relay.up();
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String(relay.port);
    const backend = new TypeOrmLockBackend({
      connection:
        database === 'postgres'
          ? { type: 'postgres', url: url.toString(), connectTimeoutMS: 2_000 }
          : { type: 'mariadb', url: url.toString(), connectTimeout: 2_000 },
      tableName: table.name,
    });
    const changes: ConnectionChange['state'][] = [];
    backend.watchConnection((change) => changes.push(change.state));
    const call = { signal: new AbortController().signal };
    const request = (owner: string) => ({ key: 'k', owner, ttl: 5_000, keepPlace: false, onLost: () => {}, ...call });
    try {
      await backend.init(call.signal);
      expect(await backend.acquire(request('1'.repeat(32)))).toMatchObject({ acquired: true });
      await relay.down();
      await expect(backend.isLocked('k', call)).rejects.toThrow(LockBackendError);
      await expect(backend.isLocked('k', call)).rejects.toThrow(LockBackendError);
      expect(changes).toEqual(['suspended']);
      await relay.up();
      let answered = false;
      for (let i = 0; i < 50 && !answered; i++) {
        answered = await backend.isLocked('k', call).then(
          (locked) => locked,
          () => false,
        );
        if (!answered) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(answered).toBe(true);
      expect(changes).toEqual(['suspended', 'reconnected']);
    } finally {
      await backend.close();
      await relay.down();
      await table.drop();
    }
  });
});
