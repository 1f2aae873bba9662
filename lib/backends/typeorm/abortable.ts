import { untilAborted } from '../../core/until-aborted';

/** Waits `ms` (without keeping the process alive), or rejects when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return untilAborted(new Promise<void>((resolve) => setTimeout(resolve, ms).unref()), signal);
}

/** Pause between two tries of a statement whose row another transaction holds; other work runs in it. */
export const BUSY_RETRY_MS = 20;
