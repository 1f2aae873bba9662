import { BadRequestException, Controller, Get, Inject, Param } from '@nestjs/common';
import { LockConfigurationError, LockService } from '../../lib';
import { SAMPLE_CONFIG, type SampleConfig } from '../config/sample-config';
import { type HeldLockView, LockActivity } from './lock-activity';
import type { LockEventView } from './lock-event-view';

@Controller('locks')
export class LocksController {
  constructor(
    private readonly locks: LockService,
    private readonly activity: LockActivity,
    @Inject(SAMPLE_CONFIG) private readonly config: SampleConfig,
  ) {}

  /** The locks this instance holds now and its recent lock events. */
  @Get()
  overview(): { instance: string; held: HeldLockView[]; recent: LockEventView[] } {
    return { instance: this.config.instance, held: this.activity.heldLocks(), recent: this.activity.recentEvents() };
  }

  /** Whether anyone (any instance) holds a key now, e.g. GET /locks/order:7 — a snapshot, for humans. */
  @Get(':key')
  async status(@Param('key') key: string): Promise<{ key: string; locked: boolean }> {
    try {
      return { key, locked: await this.locks.isLocked(key) };
    } catch (error) {
      // Not a @Locked handler, so the library does not answer for it: a key the client made invalid is a 400.
      if (error instanceof LockConfigurationError)
        throw new BadRequestException({ code: error.code, message: error.message });
      throw error;
    }
  }
}
