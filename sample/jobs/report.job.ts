import { Injectable, Logger } from '@nestjs/common';
import { Interval } from '@nestjs/schedule';
import { LockContext, Locked } from '../../lib';

export interface Report {
  readonly run: number;
  readonly fencingToken: bigint;
}

const EVERY_MS = 10_000;

/** Every instance schedules this job; the lock makes one of them run it per tick. */
@Injectable()
export class ReportJob {
  private readonly logger = new Logger(ReportJob.name);
  private runs = 0;

  // The order of @Locked and @Interval does not matter: @Locked replaces the method when the class is defined
  // and carries the scheduler's metadata over, so the scheduler calls the locked version.
  // 'skip': the instances that lose the race just do nothing this tick.
  // minHold: the winner keeps the key for half a period even though the work is quick, so an instance whose
  // timer fires a little later (started later, clock skew) still finds it taken and skips.
  @Locked('jobs:report', { onLocked: 'skip', minHold: EVERY_MS / 2 })
  @Interval('report', EVERY_MS)
  async run(): Promise<Report> {
    const report = { run: ++this.runs, fencingToken: LockContext.current()!.fencingToken };
    this.logger.log(`report #${report.run} (fencing token ${report.fencingToken})`);
    return report;
  }
}
