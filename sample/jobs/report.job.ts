import { Inject, Injectable, Logger } from '@nestjs/common';
import { Interval } from '@nestjs/schedule';
import { LockContext, Locked } from '../../lib';
import { SAMPLE_CONFIG, type SampleConfig } from '../config/sample-config';
import { JobRunsRepository } from './job-runs.repository';
import { REPORT_EVERY_MS, REPORT_MIN_HOLD_MS } from './report-schedule';

export interface ReportRun {
  readonly instance: string;
  readonly fencingToken: bigint;
  readonly at: number;
}

/** Every instance schedules this job; the lock makes one of them run it per period. */
@Injectable()
export class ReportJob {
  private readonly logger = new Logger(ReportJob.name);

  constructor(
    private readonly runs: JobRunsRepository,
    @Inject(SAMPLE_CONFIG) private readonly config: SampleConfig,
  ) {}

  // The order of @Locked and @Interval does not matter: @Locked replaces the method when the class is defined
  // and carries the scheduler's metadata over, so the scheduler calls the locked version.
  // 'skip': the instances that lose the race do nothing this tick (the method returns undefined).
  @Locked('jobs:report', { onLocked: 'skip', minHold: REPORT_MIN_HOLD_MS })
  @Interval('report', REPORT_EVERY_MS)
  async run(): Promise<ReportRun> {
    const run = { instance: this.config.instance, fencingToken: LockContext.current()!.fencingToken, at: Date.now() };
    // Recorded in the shared database so anyone can check that one instance ran it per period.
    await this.runs.record('report', run.instance, run.fencingToken, run.at);
    this.logger.log(`report run by ${run.instance} (fencing token ${run.fencingToken})`);
    return run;
  }
}
