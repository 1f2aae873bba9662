import fc from 'fast-check';
import type { DataSource } from 'typeorm';
import type { LockBackend } from '../../lib';
import { TypeOrmLockBackend } from '../../lib/backends/typeorm';
import { lockId } from '../../lib/backends/typeorm/lock-table';
import { type Database, openDataSource, TestTable } from './sql-fixture';

const call = { signal: new AbortController().signal };
const OWNER = 'a'.repeat(32);

/** Characters that break SQL built by concatenation, LIKE patterns, collations and encodings. */
const nasty = fc.constantFrom(
  "'",
  '"',
  '`',
  ';',
  '%',
  '_',
  '\\',
  '\\\\',
  '--',
  '/*',
  '*/',
  '$1',
  '?',
  ':name',
  ' ',
  '\t',
  '\n',
  'a',
  'A',
  'é',
  'É',
  '锁',
  '🔒',
  'ß',
  'ﬀ',
  '\u00a0',
  '\u200b',
  ')',
  "' OR '1'='1",
);
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Any key the core accepts: well-formed UTF-16, no NUL. */
const key = fc
  .array(fc.oneof(nasty, fc.string({ unit: 'grapheme', minLength: 1, maxLength: 3 })), { minLength: 1, maxLength: 12 })
  .map((parts) => parts.join('').split('\u0000').join(''))
  .filter((k) => k.length > 0 && !LONE_SURROGATE.test(k));

/** Keys that a collation, LIKE or trimming would confuse with `k`. */
const lookalikes = (k: string): string[] =>
  [
    k.toUpperCase(),
    k.toLowerCase(),
    `${k} `,
    ` ${k}`,
    `${k}_`,
    `${k}%`,
    k.replace(/[%_]/g, 'x'),
    k.normalize('NFD'),
  ].filter((other) => other !== k);

describe.each(['postgres', 'mariadb', 'sqlite'] as Database[])(
  'keys are stored and matched exactly (%s)',
  (database) => {
    let table: TestTable;
    let dataSource: DataSource;
    let backend: LockBackend;

    beforeAll(async () => {
      table = await TestTable.create(database, 'keys');
      dataSource = await openDataSource(database);
      backend = new TypeOrmLockBackend({ dataSource, tableName: table.name });
    });
    afterAll(async () => {
      await backend.close();
      await dataSource.destroy();
      await table.drop();
    });

    const storedKey = async (k: string): Promise<string | undefined> => {
      const placeholder = database === 'postgres' ? '$1' : '?';
      const rows = (await table.admin.query(
        `SELECT lock_key AS k FROM ${table.admin.driver.escape(table.name)} WHERE lock_id = ${placeholder}`,
        [lockId(k)],
      )) as { k: string }[];
      return rows[0]?.k;
    };

    it('quotes, semicolons, %, _, backslashes and unicode: locked, stored verbatim, no lookalike touched', async () => {
      await fc.assert(
        fc.asyncProperty(key, async (k) => {
          const taken = await backend.acquire({
            key: k,
            owner: OWNER,
            ttl: 30_000,
            keepPlace: false,
            onLost: () => {},
            ...call,
          });
          expect(taken.acquired).toBe(true);
          try {
            expect(await storedKey(k)).toBe(k);
            expect(await backend.isLocked(k, call)).toBe(true);
            for (const other of lookalikes(k)) expect(await backend.isLocked(other, call)).toBe(false);
          } finally {
            expect(await backend.release({ key: k, owner: OWNER }, call)).toBe(true);
          }
        }),
        { numRuns: 40 },
      );
    });

    it('keeps the table intact whatever the key says', async () => {
      const k = `x'); DROP TABLE ${table.name}; --`;
      const taken = await backend.acquire({
        key: k,
        owner: OWNER,
        ttl: 30_000,
        keepPlace: false,
        onLost: () => {},
        ...call,
      });
      expect(taken.acquired).toBe(true);
      expect(await storedKey(k)).toBe(k);
      expect(await backend.release({ key: k, owner: OWNER }, call)).toBe(true);
    });
  },
);
