import { answer, driverError, remainingMs, type SqlDialect, type Statement, toBigInt } from '../dialect';

/** The advisory lock key: the name's first 64 bits, as PostgreSQL's signed bigint and as pg_locks shows it. */
function advisoryKey(name: string): { key: string; classid: string; objid: string } {
  const high = name.slice(0, 8);
  const low = name.slice(8, 16);
  return {
    key: BigInt.asIntN(64, BigInt(`0x${high}${low}`)).toString(),
    classid: String(parseInt(high, 16)),
    objid: String(parseInt(low, 16)),
  };
}

/** The server's clock in ms; statement_timestamp() is one value for the whole statement. */
const NOW = `(floor(extract(epoch from statement_timestamp()) * 1000))::bigint`;

const rows = (sql: string, params: readonly unknown[]): Statement<boolean> => ({
  sql,
  params,
  read: (result) => result.records.length > 0,
});

export const postgresDialect: SqlDialect = {
  name: 'postgres',
  rowLocks: true,

  /**
   * The upsert takes the row only when it has expired. Around it, one SELECT reports the token if it did, and
   * otherwise the holder's remaining ms: the outer query sees the row as it was before the upsert.
   */
  acquireLease: (t, id, key, owner, ttl) => ({
    sql:
      `WITH taken AS (INSERT INTO ${t.table} AS l ` +
      `(${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
      `VALUES ($1, $2, $3, 1, ${NOW}, ${NOW} + $4::bigint) ` +
      `ON CONFLICT (${t.id}) DO UPDATE SET ${t.owner} = EXCLUDED.${t.owner}, ${t.token} = l.${t.token} + 1, ` +
      `${t.acquiredAt} = EXCLUDED.${t.acquiredAt}, ${t.expiresAt} = EXCLUDED.${t.expiresAt} ` +
      `WHERE l.${t.expiresAt} <= EXCLUDED.${t.acquiredAt} RETURNING ${t.token}) ` +
      `SELECT (SELECT ${t.token} FROM taken) AS token, ` +
      `(SELECT ${t.expiresAt} - ${NOW} FROM ${t.table} WHERE ${t.id} = $1) AS remaining`,
    params: [id, key, owner, ttl],
    read: (result) => {
      const token = result.records[0]?.['token'];
      return token === null || token === undefined ? { remainingMs: remainingMs(result) } : { token: toBigInt(token) };
    },
  }),

  leaseRemaining: (t, id) => ({
    sql: `SELECT ${t.expiresAt} - ${NOW} AS remaining FROM ${t.table} WHERE ${t.id} = $1`,
    params: [id],
    read: remainingMs,
  }),

  releaseLease: (t, id, owner, notifyChannel) => {
    const update =
      `UPDATE ${t.table} SET ${t.owner} = NULL, ${t.expiresAt} = ${NOW} ` +
      `WHERE ${t.id} = $1 AND ${t.owner} = $2 AND ${t.expiresAt} > ${NOW}`;
    if (notifyChannel === undefined) {
      return { sql: update, params: [id, owner], read: (result) => (result.affected ?? 0) > 0 };
    }
    // Still one statement: the notification goes out when it commits, to waiters that LISTEN.
    return rows(`WITH released AS (${update} RETURNING ${t.id} AS id) SELECT pg_notify($3, id) FROM released`, [
      id,
      owner,
      notifyChannel,
    ]);
  },

  extendLease: (t, id, owner, ttl) => ({
    sql:
      `UPDATE ${t.table} SET ${t.expiresAt} = ${NOW} + $3::bigint ` +
      `WHERE ${t.id} = $1 AND ${t.owner} = $2 AND ${t.expiresAt} > ${NOW}`,
    params: [id, owner, ttl],
    read: (result) => (result.affected ?? 0) > 0,
  }),

  isLeaseHeld: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = $1 AND ${t.expiresAt} > ${NOW}`, [id]),

  insertLockRow: (t, id, key) => ({
    sql:
      `INSERT INTO ${t.table} (${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
      `VALUES ($1, $2, NULL, 0, 0, 0) ON CONFLICT (${t.id}) DO NOTHING`,
    params: [id, key],
    read: () => undefined,
  }),

  lockRowNowait: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = $1 FOR UPDATE NOWAIT`, [id]),

  isRowFree: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = $1 FOR UPDATE SKIP LOCKED`, [id]),

  rowExists: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = $1`, [id]),

  nextToken: (t, id, key) => ({
    sql:
      `INSERT INTO ${t.table} AS l (${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
      `VALUES ($1, $2, NULL, 1, ${NOW}, 0) ` +
      `ON CONFLICT (${t.id}) DO UPDATE SET ${t.token} = l.${t.token} + 1 RETURNING ${t.token} AS token`,
    params: [id, key],
    read: (result) => toBigInt(result.records[0]?.['token']),
  }),

  tryAdvisoryLock: (name) => ({
    sql: 'SELECT pg_try_advisory_lock($1::bigint) AS answer',
    params: [advisoryKey(name).key],
    read: answer,
  }),

  advisoryUnlock: (name) => ({
    sql: 'SELECT pg_advisory_unlock($1::bigint) AS answer',
    params: [advisoryKey(name).key],
    read: answer,
  }),

  // A bigint advisory key shows in pg_locks as classid (high half), objid (low half) and objsubid 1.
  isAdvisoryLocked: (name) => {
    const { classid, objid } = advisoryKey(name);
    return {
      sql:
        `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 ` +
        `AND classid = $1::oid AND objid = $2::oid ` +
        `AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS answer`,
      params: [classid, objid],
      read: answer,
    };
  },

  // lock_timeout 0 would mean "wait forever": 100 ms is short enough for other keys' turns, long enough not to
  // fail a wait for an ordinary commit.
  tokenLockWait: { bound: "SET lock_timeout = '100ms'", unbound: 'RESET lock_timeout' },

  // SET LOCAL ends with the transaction, whatever happens to the statement; one round trip each way.
  leaseLockWait: { begin: "BEGIN; SET LOCAL lock_timeout = '1s'", end: 'COMMIT', abort: 'ROLLBACK' },

  // 55P03 lock_not_available: NOWAIT met a row another transaction holds, or lock_timeout ran out.
  isBusyError: (error) => driverError(error).code === '55P03',
};
