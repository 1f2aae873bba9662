import { Module } from '@nestjs/common';
import { readSampleConfig, SAMPLE_CONFIG, type SampleConfig } from './sample-config';

/** The sample's environment, read once at bootstrap and injected wherever it is needed. */
@Module({
  providers: [{ provide: SAMPLE_CONFIG, useFactory: (): SampleConfig => readSampleConfig() }],
  exports: [SAMPLE_CONFIG],
})
export class SampleConfigModule {}
