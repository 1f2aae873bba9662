/**
 * How often every instance's report timer fires (SAMPLE_REPORT_EVERY_MS, default 10 s). Read when the module
 * loads because @Interval takes its period when the class is defined; the e2e test shortens it per process.
 */
export const REPORT_EVERY_MS = Number(process.env.SAMPLE_REPORT_EVERY_MS ?? 10_000);

/**
 * The winner keeps the key for half a period even though the work is quick, so an instance whose timer
 * fires a little later (started later, clock skew) still finds it taken and skips.
 */
export const REPORT_MIN_HOLD_MS = REPORT_EVERY_MS / 2;
