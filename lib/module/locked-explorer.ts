import { Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { LockService } from '../core/lock-service';
import { LOCKED_METHOD } from '../decorators/locked.decorator';
import {
  bindClass,
  bindInstance,
  type LockedMethod,
  prepareLockedMethod,
  registerPendingBinder,
} from '../decorators/locked-method';

/**
 * Finds every @Locked method of the app's providers and controllers at bootstrap, validates its options
 * against this module's defaults and backends, and binds its instance to this module's LockService.
 *
 * @Locked replaces the method when the class is defined, so the router, ScheduleModule and other explorers
 * capture the locked version whatever order their hooks run in; binding happens in onModuleInit, or earlier
 * if another module's onModuleInit calls a @Locked method first.
 */
@Injectable()
export class LockedExplorer implements OnModuleInit, OnModuleDestroy {
  private readonly unregister: () => void;
  private bound = false;

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly service: LockService,
  ) {
    this.unregister = registerPendingBinder(this);
  }

  onModuleInit(): void {
    this.bind();
  }

  onModuleDestroy(): void {
    this.unregister();
  }

  bind(): void {
    if (this.bound) return;
    this.bound = true;
    this.unregister();
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      const { instance, metatype } = wrapper;
      if (!metatype || typeof instance !== 'object' || instance === null) continue;
      const methods = this.lockedMethods(Object.getPrototypeOf(instance) as object);
      if (methods.length === 0) continue;
      for (const method of methods) prepareLockedMethod(method, this.service);
      if (wrapper.isDependencyTreeStatic() && !wrapper.isTransient) bindInstance(instance, this.service);
      else bindClass(metatype, this.service);
    }
  }

  private lockedMethods(prototype: object): LockedMethod[] {
    const found: LockedMethod[] = [];
    for (const name of this.scanner.getAllMethodNames(prototype)) {
      const method: unknown = (prototype as Record<string, unknown>)[name];
      const locked =
        typeof method === 'function'
          ? (Reflect.getMetadata(LOCKED_METHOD, method) as LockedMethod | undefined)
          : undefined;
      if (locked) found.push(locked);
    }
    return found;
  }
}
