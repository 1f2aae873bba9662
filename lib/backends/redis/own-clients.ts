import Redis, { type RedisOptions } from 'ioredis';

/**
 * Clients for the nodes given as connection options. Made without connecting (init connects them), so that
 * building the backend never opens a socket, and with an error listener, without which ioredis reports every
 * reconnection attempt as an unhandled error.
 */
export function ownClients(nodes: readonly (RedisOptions | string)[]): Redis[] {
  return nodes.map((node) => {
    const client =
      typeof node === 'string' ? new Redis(node, { lazyConnect: true }) : new Redis({ ...node, lazyConnect: true });
    client.on('error', () => undefined);
    return client;
  });
}
