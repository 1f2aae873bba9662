import type { CaseResult, ScenarioResult } from '../../harness';
import type { Locker, LockerKind } from './lockers';
import { addCounts, breakdown, totalOf, type CommandCounts, type RedisClients } from './nodes';

/** One row's library, on clients of its own. */
export interface LockerRow {
  readonly kind: LockerKind;
  readonly label: string;
  readonly locker: Locker;
}

/**
 * A locker of each kind, each on its own clients (one per node of `pool`), added to `rows` as they open (so
 * that a failure half-way leaves the ones already open in `rows`, for closeRows).
 */
export async function openRows(
  pool: RedisClients,
  kinds: readonly LockerKind[],
  rows: LockerRow[] = [],
): Promise<LockerRow[]> {
  for (const kind of kinds) {
    const clients = await pool.openAll();
    rows.push({ kind, label: kind.label(pool.ports.length), locker: await kind.make(clients) });
  }
  return rows;
}

export async function closeRows(rows: readonly LockerRow[], pool: RedisClients): Promise<void> {
  await Promise.allSettled(rows.map((r) => r.locker.close()));
  await pool.close();
}

/** The row's figures, if the case filter kept it. */
export function rowResult(result: ScenarioResult, label: string): CaseResult | undefined {
  return result.cases.find((c) => c.name === label);
}

/** The peer row with the lowest per-cycle p50, if any ran. */
export function fastestPeer(result: ScenarioResult, rows: readonly LockerRow[]): CaseResult | undefined {
  return rows
    .filter((r) => r.kind.peer)
    .map((r) => rowResult(result, r.label))
    .filter((c): c is CaseResult => c !== undefined)
    .sort((a, b) => a.median.p50Us - b.median.p50Us)[0];
}

/** The peer row with the highest throughput, if any ran. */
export function busiestPeer(result: ScenarioResult, rows: readonly LockerRow[]): CaseResult | undefined {
  return rows
    .filter((r) => r.kind.peer)
    .map((r) => rowResult(result, r.label))
    .filter((c): c is CaseResult => c !== undefined)
    .sort((a, b) => b.opsPerSec - a.opsPerSec)[0];
}

/** Commands sent by the clients (round trips) and executed by the servers (INFO commandstats) over some work. */
export interface CommandUse {
  readonly sent: Map<string, number>;
  readonly executed: Map<string, number>;
  /**
   * µs the servers spent on the commands the clients sent (a script's time covers the calls inside it, which
   * are not added again): what the servers' side of the work costs, whatever the clients do.
   */
  readonly serverUs: number;
}

/**
 * Starts counting: the returned function (awaited once the work is done) gives what the work used. `counts`
 * are the client-side counts of the clients doing the work.
 */
export async function countCommandsFrom(
  pool: RedisClients,
  counts: CommandCounts = pool.sent,
): Promise<() => Promise<CommandUse>> {
  const before = await pool.commandStats();
  const sentBefore = new Map(counts);
  return async () => {
    const sent = addCounts(new Map(counts), sentBefore, -1);
    const after = await pool.commandStats();
    const executed = addCounts(after.calls, before.calls, -1);
    const usec = addCounts(after.usec, before.usec, -1);
    // The ready check of a connection opened meanwhile (a subscriber) is not the rows' work.
    sent.delete('info');
    let serverUs = 0;
    for (const [name, n] of sent) if (n > 0) serverUs += usec.get(name) ?? 0;
    return { sent, executed, serverUs };
  };
}

export function describeUse(use: CommandUse, per: number): string {
  return (
    `sent ${(totalOf(use.sent) / per).toFixed(2)} (${breakdown(use.sent, per)}); ` +
    `executed ${(totalOf(use.executed) / per).toFixed(2)} (${breakdown(use.executed, per)}); ` +
    `server ${(use.serverUs / per).toFixed(1)} µs`
  );
}
