import { Controller, Get, NotFoundException, Param, Post } from '@nestjs/common';
import { type StockLevel, StockLedger } from './stock-ledger';
import { type RecountResult, StockRecountWorker } from './stock-recount.worker';

@Controller('stock')
export class StockController {
  constructor(
    private readonly worker: StockRecountWorker,
    private readonly ledger: StockLedger,
  ) {}

  @Get(':sku')
  async find(@Param('sku') sku: string): Promise<StockLevel> {
    const level = await this.ledger.find(sku);
    if (!level) throw new NotFoundException(`No count for ${sku} yet: POST /stock/${sku}/recount.`);
    return level;
  }

  @Post(':sku/recount')
  recount(@Param('sku') sku: string): Promise<RecountResult> {
    return this.worker.recount(sku);
  }
}
