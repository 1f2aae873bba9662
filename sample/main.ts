import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module';

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create(AppModule);
  // On SIGTERM/SIGINT Nest runs onApplicationShutdown, where DistributedLockModule releases every lock
  // this process still holds instead of leaving them to expire after their ttl.
  app.enableShutdownHooks();
  // PORT=0 takes a free port; the line below says which (the e2e test reads it).
  await app.listen(Number(process.env.PORT ?? 3000));
  const url = (await app.getUrl()).replace('[::1]', 'localhost');
  Logger.log(`Listening on ${url} (try: curl ${url}/locks)`, 'Sample');
}

void bootstrap();
