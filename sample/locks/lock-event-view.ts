import type { LockEvent } from '../../lib';

/** A LockEvent as JSON can carry it: bigint tokens as decimal strings, errors as their code and message. */
export interface LockEventView {
  readonly type: LockEvent['type'];
  readonly keys: readonly string[];
  readonly backend: string;
  readonly at: string;
  readonly detail: Readonly<Record<string, string | number | boolean>>;
}

export function describeEvent(event: LockEvent): LockEventView {
  const base = { type: event.type, keys: event.keys, backend: event.backend, at: new Date(event.at).toISOString() };
  switch (event.type) {
    case 'acquired':
      return { ...base, detail: { fencingTokens: event.fencingTokens.join(','), waitedMs: event.waitedMs } };
    case 'released':
      return { ...base, detail: { heldMs: event.heldMs } };
    case 'extended':
      return { ...base, detail: { ttl: event.ttl, automatic: event.automatic } };
    case 'lost':
      return { ...base, detail: { heldMs: event.heldMs, error: event.error.message } };
    case 'failed':
      return {
        ...base,
        detail: {
          operation: event.operation,
          waitedMs: event.waitedMs,
          error: `${event.error.code}: ${event.error.message}`,
        },
      };
    case 'connection':
      return {
        ...base,
        detail: { state: event.state, ...(event.reason === undefined ? {} : { reason: event.reason }) },
      };
  }
}
