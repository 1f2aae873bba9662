/**
 * The schedulers the backend's own timing relies on, taken when this module loads. A test that fakes timers
 * afterwards (jest.useFakeTimers() fakes process.nextTick and setImmediate too) would otherwise stall the
 * backend's writes and releases until its fake clock moves. Where even these were faked already
 * (@sinonjs/fake-timers marks what it fakes), the backend does without them.
 */
const nextTick: (callback: () => void) => void = process.nextTick;
const checkPhase: (callback: () => void) => unknown = setImmediate;

/** Whether `endOfTick` is the real process.nextTick. */
export const realEndOfTick = !('clock' in nextTick);

/** Runs `callback` when the current tick ends, before any I/O. */
export function endOfTick(callback: () => void): void {
  nextTick(callback);
}

/**
 * Resolves once the I/O this process has received by now has been handled: setImmediate runs after the event
 * loop's poll phase. At once if setImmediate was faked before this module loaded.
 */
export function afterPendingIo(): Promise<void> {
  if ('clock' in checkPhase) return Promise.resolve();
  return new Promise<void>((resolve) => checkPhase(resolve));
}
