import { Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper';
import { LockService } from '../core/lock-service';
import { LOCKED_METHOD } from '../decorators/locked.decorator';
import {
  bindClass,
  bindInstance,
  type LockedMethod,
  prepareLockedMethod,
  registerPendingBinder,
  unbindClass,
} from '../decorators/locked-method';

/**
 * Finds every @Locked method of the app's providers and controllers at bootstrap, validates its options
 * against this module's defaults and backends, and binds each instance to this module's LockService.
 *
 * @Locked replaces the method when the class is defined, so the router, ScheduleModule and other explorers
 * capture the locked version whatever order their hooks run in. Binding happens in onModuleInit; a call that
 * arrives earlier (another provider's async factory, another module's onModuleInit) binds what exists so far,
 * and onModuleInit binds the rest. Transient providers are bound instance by instance; instances made after
 * bootstrap (request scope, moduleRef.resolve) are found by class, which only one running app may then have.
 */
@Injectable()
export class LockedExplorer implements OnModuleInit, OnModuleDestroy {
  private readonly unregister: () => void;
  /** Classes whose later instances (request-scoped, resolved transients) run on this app's store. */
  private readonly classes = new Set<object>();

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly service: LockService,
  ) {
    this.unregister = registerPendingBinder(this);
  }

  onModuleInit(): void {
    try {
      this.bind();
    } finally {
      this.unregister();
    }
  }

  onModuleDestroy(): void {
    this.unregister();
    for (const type of this.classes) unbindClass(type, this.service);
  }

  /** Binds every instance that exists now. Safe to call again: later calls bind what was made since. */
  bind(): void {
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      if (!wrapper.isDependencyTreeStatic() || wrapper.isTransient) {
        const type = wrapper.metatype as { prototype?: unknown } | null;
        const methods = this.lockedMethods(type?.prototype);
        for (const method of methods) prepareLockedMethod(method, this.service);
        if (type && methods.length > 0) {
          bindClass(type, this.service, methods[0]!.where);
          this.classes.add(type);
        }
        if (!wrapper.isDependencyTreeStatic()) continue;
      }
      for (const instance of instancesOf(wrapper)) {
        const methods = this.lockedMethods(Object.getPrototypeOf(instance));
        if (methods.length === 0) continue;
        for (const method of methods) prepareLockedMethod(method, this.service);
        bindInstance(instance, this.service);
      }
    }
  }

  private lockedMethods(prototype: unknown): LockedMethod[] {
    const found: LockedMethod[] = [];
    if (typeof prototype !== 'object' || prototype === null) return found;
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

/** The instances made so far: one for a singleton, one per inquirer for a transient provider. */
function instancesOf(wrapper: InstanceWrapper): object[] {
  const candidates = wrapper.isTransient
    ? wrapper.getStaticTransientInstances().map((perContext) => perContext?.instance as unknown)
    : [wrapper.instance as unknown];
  return candidates.filter((instance): instance is object => typeof instance === 'object' && instance !== null);
}
