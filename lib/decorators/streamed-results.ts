import { HeldUntil } from '../core/held-until';

interface StreamLike {
  once(event: 'close' | 'end' | 'error', listener: () => void): unknown;
  readonly destroyed?: boolean;
  readonly readableEnded?: boolean;
}

/**
 * When a handler returns a file to stream (Nest's StreamableFile), the response body is sent after the handler
 * returned: the lock must last until the stream is done, not until the handler is. Resolves then.
 */
export function streamDone(value: unknown): Promise<void> | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const getStream = (value as { getStream?: unknown }).getStream;
  if (typeof getStream !== 'function') return undefined;
  const stream = (getStream as () => unknown).call(value) as StreamLike | undefined;
  if (!stream || typeof stream.once !== 'function') return undefined;
  if (stream.destroyed || stream.readableEnded) return Promise.resolve();
  return new Promise<void>((resolve) => {
    stream.once('close', resolve);
    stream.once('end', resolve);
    stream.once('error', resolve);
  });
}

/** The handler's result, marked to keep its lock while it streams. */
export function holdWhileStreaming(value: unknown): unknown {
  const done = streamDone(value);
  return done ? new HeldUntil(value, done) : value;
}
