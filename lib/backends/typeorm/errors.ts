import { LockBackendClosedError, LockBackendError } from '../../core/errors';
import { messages } from '../../core/messages';
import { driverError } from './dialect';

export const BACKEND_KIND = 'typeorm';

/** Codes of a connection that failed or broke (network, server going away), as opposed to a failed statement. */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'PROTOCOL_CONNECTION_LOST',
  'ER_CONNECTION_KILLED',
  '57P01',
  '57P02',
  '57P03',
]);

export function isConnectionError(error: unknown): boolean {
  const code = driverError(error).code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) return true;
  const message = error instanceof Error ? error.message : '';
  return /Connection terminated|connection is closed|Can't add new command when connection is in closed state/i.test(
    message,
  );
}

/** What the database said, without credentials: passwords in URLs are masked. */
export function describeCause(error: unknown): string {
  const inner = driverError(error);
  const code = typeof inner.code === 'string' ? `${inner.code}: ` : '';
  const message = error instanceof Error ? error.message : String(error);
  return `${code}${message}`.replace(/\/\/[^/@\s]*:[^/@\s]*@/g, '//***:***@');
}

/**
 * A failure the backend saw itself rather than an error the database returned (no pool connection in time, a
 * connection that died under a lock being taken): its message is shown as it is, not as "the database said".
 */
export class SqlCallError extends Error {
  override readonly name = 'SqlCallError';
}

/** The call gave up waiting for a pool connection: its statement never reached the database. */
export function noPoolConnection(reason: unknown): SqlCallError {
  return new SqlCallError(
    'No pool connection became free before the call had to give up, so nothing was sent to the database ' +
      '(every connection of the pool was in use: by held session locks, waiting statements or the app). ' +
      "Raise the DataSource's pool size, or operationTimeout if the wait was merely short.",
    { cause: reason },
  );
}

export function backendError(operation: string, error: unknown): LockBackendError {
  const said = error instanceof SqlCallError ? error.message : `The database said: ${describeCause(error)}`;
  return new LockBackendError(BACKEND_KIND, `${messages.backendFailed(BACKEND_KIND, operation)} ${said}`, [], {
    cause: error,
  });
}

export function closedError(operation: string): LockBackendError {
  return new LockBackendClosedError(BACKEND_KIND, operation);
}
