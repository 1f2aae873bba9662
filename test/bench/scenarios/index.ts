import type { Scenario } from '../harness';
import { memoryScenario } from './memory';
import { memoryContentionScenario } from './memory-contention';
import { redisContentionScenarios } from './redis-contention';
import { redisThroughputScenario } from './redis-throughput';
import { redisUncontendedScenarios } from './redis-uncontended';
import { typeormScenario } from './typeorm';
import { zookeeperScenario } from './zookeeper';

/**
 * Every scenario, in the order they run. A new store (Redis, SQL, ZooKeeper) or a peer library measured side
 * by side is one more file here; its setup throws BenchSkip when what it needs is missing.
 */
export const scenarios: readonly Scenario[] = [
  memoryScenario,
  memoryContentionScenario,
  typeormScenario,
  zookeeperScenario,
  ...redisUncontendedScenarios,
  redisThroughputScenario,
  ...redisContentionScenarios,
];
