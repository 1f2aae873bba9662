import type { SqlDialect, Statement } from '../dialect';
import { remainingMs, toBigInt } from '../dialect';

/** The clock in ms (SQLite runs in this process: its clock is the machine's). One value per statement. */
const NOW = `CAST(unixepoch('subsec') * 1000 AS INTEGER)`;

const rows = (sql: string, params: readonly unknown[]): Statement<boolean> => ({
  sql,
  params,
  read: (result) => result.records.length > 0,
});

const noRowLocks = (): never => {
  throw new Error('SQLite has no row or advisory locks: session mode is refused when the backend is constructed');
};

/** SQLite through better-sqlite3: lease mode only. */
export const sqliteDialect: SqlDialect = {
  name: 'sqlite',
  rowLocks: false,

  acquireLease: (t, id, key, owner, ttl) => ({
    sql:
      `INSERT INTO ${t.table} (${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
      `VALUES (?, ?, ?, 1, ${NOW}, ${NOW} + ?) ` +
      `ON CONFLICT (${t.id}) DO UPDATE SET ${t.owner} = excluded.${t.owner}, ` +
      `${t.token} = ${t.table}.${t.token} + 1, ${t.acquiredAt} = excluded.${t.acquiredAt}, ` +
      `${t.expiresAt} = excluded.${t.expiresAt} ` +
      `WHERE ${t.table}.${t.expiresAt} <= excluded.${t.acquiredAt} RETURNING ${t.token} AS token`,
    params: [id, key, owner, ttl],
    read: (result) => (result.records[0] ? { token: toBigInt(result.records[0]['token']) } : {}),
  }),

  leaseRemaining: (t, id) => ({
    sql: `SELECT ${t.expiresAt} - ${NOW} AS remaining FROM ${t.table} WHERE ${t.id} = ?`,
    params: [id],
    read: remainingMs,
  }),

  releaseLease: (t, id, owner) => ({
    sql:
      `UPDATE ${t.table} SET ${t.owner} = NULL, ${t.expiresAt} = ${NOW} ` +
      `WHERE ${t.id} = ? AND ${t.owner} = ? AND ${t.expiresAt} > ${NOW}`,
    params: [id, owner],
    read: (result) => (result.affected ?? 0) > 0,
  }),

  extendLease: (t, id, owner, ttl) => ({
    sql:
      `UPDATE ${t.table} SET ${t.expiresAt} = ${NOW} + ? ` +
      `WHERE ${t.id} = ? AND ${t.owner} = ? AND ${t.expiresAt} > ${NOW}`,
    params: [ttl, id, owner],
    read: (result) => (result.affected ?? 0) > 0,
  }),

  isLeaseHeld: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = ? AND ${t.expiresAt} > ${NOW}`, [id]),

  insertLockRow: noRowLocks,
  lockRowNowait: noRowLocks,
  isRowFree: noRowLocks,
  rowExists: noRowLocks,
  nextToken: noRowLocks,
  tryAdvisoryLock: noRowLocks,
  advisoryUnlock: noRowLocks,
  isAdvisoryLocked: noRowLocks,
  isBusyError: () => false,
};
