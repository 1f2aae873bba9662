/**
 * (b) Throughput on one Redis node: 64 loops at once, each acquiring and releasing a key of its own (no
 * contention), all over one connection per row. What the per-call overhead of each library costs when the
 * connection, not the round trip, is the limit. Ours (backend alone, LockService) against the peers and the
 * raw floor, in the same run.
 *
 * Target: LockService ≥ 0.9× the raw floor's cycles/s (1 / median run time per cycle).
 */
import { formatRate, type BenchCase, type Scenario, type SummaryLine } from '../harness';
import { BACKEND, PEERS, RAW, SERVICE, USING } from './redis/lockers';
import { RedisClients, redisPorts } from './redis/nodes';
import { busiestPeer, closeRows, openRows, rowResult, type LockerRow } from './redis/rows';

const LOOPS = 64;
const RAW_RATE_TARGET = 0.9;

const nothing = async (): Promise<void> => undefined;

export const redisThroughputScenario: Scenario = {
  name: 'redis-throughput',
  title: `Redis, 1 node: ${LOOPS} concurrent acquire+release loops on distinct keys over one connection`,
  tags: ['redis', 'store', 'peers'],
  async setup() {
    const pool = new RedisClients(redisPorts(1));
    const rows: LockerRow[] = [];
    try {
      await openRows(pool, [RAW, BACKEND, SERVICE, USING, ...PEERS], rows);
      const cases: BenchCase[] = rows.map((row, r) => {
        const keys = Array.from({ length: LOOPS }, (_, w) => `${pool.prefix}throughput:${r}:${w}`);
        return {
          name: row.label,
          concurrency: LOOPS,
          op:
            row.kind === USING
              ? (w: number) => row.locker.run(keys[w]!, nothing)
              : async (w: number) => {
                  const release = await row.locker.acquire(keys[w]!);
                  await release();
                },
        };
      });
      const raw = rows[0]!;
      return {
        baseline: raw.label,
        cases,
        summarize(result): readonly SummaryLine[] {
          const base = rowResult(result, raw.label)!;
          const lines: SummaryLine[] = [
            {
              text: `cycles/s = 1 / (median run time per cycle); judged: the LockService rows (what users call)`,
            },
          ];
          for (const judged of [rows[2]!, rows[3]!]) {
            const row = rowResult(result, judged.label);
            if (!row) continue;
            const ratio = row.opsPerSec / base.opsPerSec;
            lines.push({
              text:
                `${judged.label}: ${formatRate(row.opsPerSec)} cycles/s = ${ratio.toFixed(2)}× the raw floor's ` +
                `${formatRate(base.opsPerSec)} (target ≥ ${RAW_RATE_TARGET}×)`,
              ok: ratio >= RAW_RATE_TARGET,
            });
          }
          const backend = rowResult(result, rows[1]!.label);
          if (backend) {
            lines.push({
              text: `${backend.name}: ${formatRate(backend.opsPerSec)} cycles/s = ${(backend.opsPerSec / base.opsPerSec).toFixed(2)}× the raw floor`,
            });
          }
          const peer = busiestPeer(result, rows);
          if (peer) {
            lines.push({
              text: `fastest peer: ${peer.name}, ${formatRate(peer.opsPerSec)} cycles/s = ${(peer.opsPerSec / base.opsPerSec).toFixed(2)}× the raw floor`,
            });
          }
          return lines;
        },
        dispose: () => closeRows(rows, pool),
      };
    } catch (error) {
      await closeRows(rows, pool);
      throw error;
    }
  },
};
