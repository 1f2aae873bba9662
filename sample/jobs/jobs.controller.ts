import { Controller, Get } from '@nestjs/common';
import { type JobRunView, JobRunsRepository } from './job-runs.repository';

@Controller('jobs')
export class JobsController {
  constructor(private readonly runs: JobRunsRepository) {}

  /** The last report runs across every instance sharing the database. */
  @Get('report/runs')
  reportRuns(): Promise<JobRunView[]> {
    return this.runs.recent('report', 10);
  }
}
