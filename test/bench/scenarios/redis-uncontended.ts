/**
 * (a) Uncontended sequential acquire+release on one key, on 1 Redis node and on 5 (Redlock, quorum 3): ours —
 * the backend alone, and LockService, which is what users call and what the targets judge — against
 * redlock@4, @sesamecare-oss/redlock and redis-semaphore, and against the raw floor (SET NX PX + a Lua
 * compare-and-delete), on the same nodes in the same run. Every row has clients of its own; the harness
 * interleaves the rows run by run. Redis commands per cycle are counted in setup over a fixed number of
 * cycles: as sent by the clients (round trips) and as executed by the servers (INFO commandstats, which also
 * counts each call a Lua script makes).
 *
 * Targets (ratios of per-cycle p50 in the same run): 1 node, LockService ≤ 1.10× the raw floor and faster
 * than every peer; 5 nodes, LockService ≥ 1.3× faster than the best peer.
 */
import {
  formatUs,
  type BenchCase,
  type CaseResult,
  type Scenario,
  type ScenarioResult,
  type SummaryLine,
} from '../harness';
import { BACKEND, PEERS, RAW, SERVICE, USING } from './redis/lockers';
import { RedisClients, redisPorts } from './redis/nodes';
import {
  closeRows,
  countCommandsFrom,
  describeUse,
  fastestPeer,
  openRows,
  rowResult,
  type CommandUse,
  type LockerRow,
} from './redis/rows';

const RAW_P50_TARGET = 1.1;
const PEER_SPEEDUP_TARGET_5 = 1.3;
const COUNTED_CYCLES = { full: 500, quick: 50 };

const nothing = async (): Promise<void> => undefined;

function ratioText(row: CaseResult, base: CaseResult): string {
  return (
    `p50 ${formatUs(row.median.p50Us)} µs = ${(row.median.p50Us / base.median.p50Us).toFixed(2)}× ` +
    `(mean ${formatUs(row.median.meanUs)} µs = ${(row.median.meanUs / base.median.meanUs).toFixed(2)}×)`
  );
}

function uncontended(nodes: 1 | 5): Scenario {
  return {
    name: `redis-uncontended-${nodes}`,
    title: `Redis, ${nodes === 1 ? '1 node' : `${nodes} nodes (Redlock, quorum 3)`}: uncontended acquire+release on one key, sequential`,
    tags: ['redis', 'store', 'peers'],
    async setup({ quick }) {
      const pool = new RedisClients(redisPorts(nodes));
      const rows: LockerRow[] = [];
      try {
        await openRows(pool, [RAW, BACKEND, SERVICE, USING, ...PEERS], rows);
        const keyOf = new Map(rows.map((r, i) => [r, `${pool.prefix}uncontended:${i}`]));
        const cycle = (row: LockerRow): (() => Promise<void>) => {
          const key = keyOf.get(row)!;
          if (row.kind === USING) return () => row.locker.run(key, nothing);
          return async () => {
            const release = await row.locker.acquire(key);
            await release();
          };
        };
        const cycles = quick ? COUNTED_CYCLES.quick : COUNTED_CYCLES.full;
        const commands = new Map<LockerRow, CommandUse>();
        for (const row of rows) {
          const run = cycle(row);
          await run(); // scripts cached, connections warm
          const counted = await countCommandsFrom(pool);
          for (let i = 0; i < cycles; i++) await run();
          commands.set(row, await counted());
        }
        const cases: BenchCase[] = rows.map((row) => ({ name: row.label, op: cycle(row) }));
        const [raw, , service, using] = rows as [LockerRow, LockerRow, LockerRow, LockerRow];
        return {
          baseline: raw.label,
          cases,
          summarize(result: ScenarioResult): readonly SummaryLine[] {
            const lines: SummaryLine[] = [
              {
                text:
                  `judged: the LockService rows (what users call); ratios are of per-cycle p50, medians over runs; ` +
                  `every row waits up to 10 s on a busy key (peers: their documented retry settings)`,
              },
            ];
            const base = rowResult(result, raw.label)!;
            const peer = fastestPeer(result, rows);
            for (const judged of [service, using]) {
              const row = rowResult(result, judged.label);
              if (!row) continue;
              if (nodes === 1) {
                const ratio = row.median.p50Us / base.median.p50Us;
                lines.push({
                  text: `${judged.label}: ${ratioText(row, base)} the raw floor (target ≤ ${RAW_P50_TARGET.toFixed(2)}× p50)`,
                  ok: ratio <= RAW_P50_TARGET,
                });
                if (peer) {
                  lines.push({
                    text:
                      `${judged.label}: p50 ${formatUs(row.median.p50Us)} µs vs the fastest peer, ${peer.name}, ` +
                      `${formatUs(peer.median.p50Us)} µs: ${(peer.median.p50Us / row.median.p50Us).toFixed(2)}× as fast ` +
                      `(target: faster than every peer)`,
                    ok: row.median.p50Us < peer.median.p50Us,
                  });
                }
              } else if (peer) {
                const speedup = peer.median.p50Us / row.median.p50Us;
                lines.push({
                  text:
                    `${judged.label}: p50 ${formatUs(row.median.p50Us)} µs vs the fastest peer, ${peer.name}, ` +
                    `${formatUs(peer.median.p50Us)} µs: ${speedup.toFixed(2)}× as fast ` +
                    `(mean ${(peer.median.meanUs / row.median.meanUs).toFixed(2)}×; target ≥ ${PEER_SPEEDUP_TARGET_5}×)`,
                  ok: speedup >= PEER_SPEEDUP_TARGET_5,
                });
              }
            }
            const backend = rowResult(result, rows[1]!.label);
            if (backend) lines.push({ text: `${rows[1]!.label}: ${ratioText(backend, base)} the raw floor` });
            lines.push({
              text: `Redis commands per cycle over ${cycles} cycles (sent = round trips; executed = INFO commandstats on the ${nodes} node(s), Lua-internal calls included):`,
            });
            for (const row of rows) lines.push({ text: `  ${row.label}: ${describeUse(commands.get(row)!, cycles)}` });
            // What the fencing counter and the line cost on the servers alone, against the target's margin.
            const serverExtraUs = (commands.get(service)!.serverUs - commands.get(raw)!.serverUs) / cycles;
            lines.push({
              text:
                `${service.label}: the servers spend ${formatUs(serverExtraUs)} µs more per cycle than for the raw floor ` +
                `(fencing counter, line check) = ${((serverExtraUs / base.median.p50Us) * 100).toFixed(1)} % of the ` +
                `floor's p50, before any client work`,
            });
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
}

export const redisUncontendedScenarios: readonly Scenario[] = [uncontended(1), uncontended(5)];
