/**
 * `nestjs-distributed-lock/zookeeper`: the only module that loads node-zookeeper-client (an optional peer
 * dependency), so the main entry works without it.
 */
import * as zookeeper from 'node-zookeeper-client';
import { ZooKeeperLockBackendBase } from './zookeeper-lock-backend';
import type { ZooKeeperLockBackendOptions } from './zookeeper-options';

export type { ZooKeeperLockBackendOptions } from './zookeeper-options';
export { encodeKey as zooKeeperNodeName, decodeKey as zooKeeperKeyOf } from './key-encoding';

/**
 * Locks on ZooKeeper with Apache Curator's InterProcessMutex recipe and layout: ephemeral sequential nodes,
 * each waiter watching only its predecessor, locks that end with the session. See the README for the options,
 * the connection-state policy and Curator interoperability.
 */
export class ZooKeeperLockBackend extends ZooKeeperLockBackendBase {
  constructor(options: ZooKeeperLockBackendOptions) {
    super(options, zookeeper);
  }
}
