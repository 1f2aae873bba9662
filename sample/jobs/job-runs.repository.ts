import { Injectable } from '@nestjs/common';
import { SampleDatabase } from '../database/sample-database';

export interface JobRunView {
  readonly instance: string;
  readonly fencingToken: string;
  readonly at: string;
}

interface JobRunRow {
  readonly instance: string;
  readonly fencing_token: number | bigint;
  readonly at: number;
}

/** Who ran which job when, in the database every instance shares: the record that it ran once per period. */
@Injectable()
export class JobRunsRepository {
  constructor(private readonly db: SampleDatabase) {}

  async record(job: string, instance: string, fencingToken: bigint, at: number): Promise<void> {
    await this.db.change('INSERT INTO job_runs (job, instance, fencing_token, at) VALUES (?, ?, ?, ?)', [
      job,
      instance,
      fencingToken,
      at,
    ]);
  }

  /** The latest runs of `job` by any instance, newest first. */
  async recent(job: string, limit: number): Promise<JobRunView[]> {
    const rows = await this.db.query<JobRunRow>(
      'SELECT instance, fencing_token, at FROM job_runs WHERE job = ? ORDER BY at DESC LIMIT ?',
      [job, limit],
    );
    return rows.map((row) => ({
      instance: row.instance,
      fencingToken: String(row.fencing_token),
      at: new Date(row.at).toISOString(),
    }));
  }
}
