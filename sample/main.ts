import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module';

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create(AppModule);
  // On SIGTERM/SIGINT Nest runs onApplicationShutdown, where DistributedLockModule releases every lock
  // this process still holds instead of leaving them to expire after their ttl.
  app.enableShutdownHooks();
  const port = Number(process.env.PORT ?? 3000);
  await app.listen(port);
  Logger.log(`Listening on http://localhost:${port} (try: curl -X POST localhost:${port}/orders/7/pay)`, 'Sample');
}

void bootstrap();
