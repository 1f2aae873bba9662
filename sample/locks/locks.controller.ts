import { Controller, Get, Param } from '@nestjs/common';
import { LockService } from '../../lib';

@Controller('locks')
export class LocksController {
  constructor(private readonly locks: LockService) {}

  /** A snapshot for humans and dashboards, e.g. GET /locks/order:7 — never use it to decide who may work. */
  @Get(':key')
  async status(@Param('key') key: string): Promise<{ key: string; locked: boolean }> {
    return { key, locked: await this.locks.isLocked(key) };
  }
}
