/**
 * Keeps a plain Node process alive while something it awaits is pending — a lock acquisition, a shutdown —
 * even though the lock clock's timers are unref'd (a watchdog must never hold a finished process open).
 * One interval for the whole process, ref'd while anyone holds it: two flag flips per call, no timer churn.
 */
let holders = 0;
let interval: NodeJS.Timeout | undefined;

/** Holds the process open until the returned function is called (once). */
export function holdProcess(): () => void {
  interval ??= setInterval(() => undefined, 2 ** 31 - 1).unref();
  if (holders++ === 0) interval.ref();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holders === 0) interval!.unref();
  };
}
