/**
 * The signal of a call nobody can cancel: what a backend's `init()` uses when a plain script calls it without
 * one, so the call is bounded by the backend's own timeouts instead of failing on `undefined.aborted`.
 */
export const NEVER_ABORTED: AbortSignal = new AbortController().signal;
