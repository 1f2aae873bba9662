import { answer, driverError, remainingMs, type SqlDialect, type Statement, toBigInt } from '../dialect';

/**
 * The server's clock in ms since the epoch. UTC_TIMESTAMP does not depend on the session time zone (so no
 * daylight-saving ambiguity) and is one value for the whole statement.
 */
const NOW = `(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000)`;

/**
 * The key's text for `lock_key`, which only people read (keys are matched by lock_id). As bytes, it is stored
 * as is in a utf8mb4 column, and still stored (as its UTF-8 bytes, shown as latin1) in a latin1 column made
 * before the table definition declared utf8mb4 — where the text itself would fail with ER_TRUNC for 日本 or 🔒.
 */
const KEY_TEXT = 'CAST(? AS BINARY)';

const saveLockWait = (seconds: number): string =>
  `SET @distributed_lock_wait = @@SESSION.innodb_lock_wait_timeout, SESSION innodb_lock_wait_timeout = ${seconds}`;
const RESTORE_LOCK_WAIT = 'SET SESSION innodb_lock_wait_timeout = @distributed_lock_wait';

/** mysql2's ResultSetHeader for an INSERT: insertId carries what LAST_INSERT_ID(expr) was last set to. */
const insertId = (raw: unknown): number => Number((raw as { insertId?: unknown } | undefined)?.insertId ?? 0);

const rows = (sql: string, params: readonly unknown[]): Statement<boolean> => ({
  sql,
  params,
  read: (result) => result.records.length > 0,
});

/** MySQL and MariaDB. */
export const mysqlDialect: SqlDialect = {
  name: 'mysql',
  rowLocks: true,

  /**
   * MySQL's upsert has no WHERE: each column becomes IF(free, new, old). Assignments run left to right and
   * see the values already assigned, so the expiry the condition reads is assigned last. The outcome comes
   * back in insertId: LAST_INSERT_ID(1) on insert, LAST_INSERT_ID(counter + 1) on takeover, and on a busy
   * row LAST_INSERT_ID(0) resets what the VALUES row had set, so 0 means busy (whatever CLIENT_FOUND_ROWS).
   */
  acquireLease: (t, id, key, owner, ttl) => {
    const free = `${t.expiresAt} <= ${NOW}`;
    return {
      sql:
        `INSERT INTO ${t.table} (${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
        `VALUES (?, ${KEY_TEXT}, ?, LAST_INSERT_ID(1), ${NOW}, ${NOW} + ?) ON DUPLICATE KEY UPDATE ` +
        `${t.token} = IF(${free}, LAST_INSERT_ID(${t.token} + 1), ${t.token} + LAST_INSERT_ID(0)), ` +
        `${t.owner} = IF(${free}, VALUES(${t.owner}), ${t.owner}), ` +
        `${t.acquiredAt} = IF(${free}, VALUES(${t.acquiredAt}), ${t.acquiredAt}), ` +
        `${t.expiresAt} = IF(${free}, VALUES(${t.expiresAt}), ${t.expiresAt})`,
      params: [id, key, owner, ttl],
      read: (result) => {
        const token = insertId(result.raw);
        return token > 0 ? { token: BigInt(token) } : {};
      },
    };
  },

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

  // Counts as done even if the new expiry equals the old one: mysql2 reports matched rows (CLIENT_FOUND_ROWS).
  extendLease: (t, id, owner, ttl) => ({
    sql:
      `UPDATE ${t.table} SET ${t.expiresAt} = ${NOW} + ? ` +
      `WHERE ${t.id} = ? AND ${t.owner} = ? AND ${t.expiresAt} > ${NOW}`,
    params: [ttl, id, owner],
    read: (result) => (result.affected ?? 0) > 0,
  }),

  isLeaseHeld: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = ? AND ${t.expiresAt} > ${NOW}`, [id]),

  insertLockRow: (t, id, key) => ({
    sql:
      `INSERT INTO ${t.table} (${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
      `VALUES (?, ${KEY_TEXT}, NULL, 0, 0, 0) ON DUPLICATE KEY UPDATE ${t.id} = ${t.id}`,
    params: [id, key],
    read: () => undefined,
  }),

  lockRowNowait: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = ? FOR UPDATE NOWAIT`, [id]),

  isRowFree: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = ? FOR UPDATE SKIP LOCKED`, [id]),

  rowExists: (t, id) => rows(`SELECT 1 FROM ${t.table} WHERE ${t.id} = ?`, [id]),

  nextToken: (t, id, key) => ({
    sql:
      `INSERT INTO ${t.table} (${t.id}, ${t.key}, ${t.owner}, ${t.token}, ${t.acquiredAt}, ${t.expiresAt}) ` +
      `VALUES (?, ${KEY_TEXT}, NULL, LAST_INSERT_ID(1), ${NOW}, 0) ` +
      `ON DUPLICATE KEY UPDATE ${t.token} = LAST_INSERT_ID(${t.token} + 1)`,
    params: [id, key],
    read: (result) => toBigInt(insertId(result.raw)),
  }),

  // GET_LOCK names are at most 64 characters: the name is 64 hex digits. Timeout 0: never waits.
  tryAdvisoryLock: (name) => ({ sql: 'SELECT GET_LOCK(?, 0) AS answer', params: [name], read: answer }),

  advisoryUnlock: (name) => ({ sql: 'SELECT RELEASE_LOCK(?) AS answer', params: [name], read: answer }),

  isAdvisoryLocked: (name) => ({
    sql: 'SELECT IS_USED_LOCK(?) IS NOT NULL AS answer',
    params: [name],
    read: answer,
  }),

  // MariaDB: 0 fails a row-lock wait at once (errno 1205); MySQL raises it to its minimum, 1 s. The
  // connection's own value is kept in a session variable and put back before it returns to the pool.
  tokenLockWait: { bound: saveLockWait(0), unbound: RESTORE_LOCK_WAIT },

  // Whole seconds only; the statement runs in autocommit between the two SETs.
  leaseLockWait: { begin: saveLockWait(1), end: RESTORE_LOCK_WAIT, abort: RESTORE_LOCK_WAIT },

  // MariaDB answers NOWAIT with 1205 (lock wait timeout), MySQL 8 with 3572 (ER_LOCK_NOWAIT).
  isBusyError: (error) => {
    const errno = driverError(error).errno;
    return errno === 1205 || errno === 3572;
  },
};
