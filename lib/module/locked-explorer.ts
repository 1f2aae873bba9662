import { Injectable, type OnApplicationBootstrap, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper';
import { LockConfigurationError } from '../core/errors';
import { LockService } from '../core/lock-service';
import { messages } from '../core/messages';
import { LOCKED_METHOD } from '../decorators/locked.decorator';
import {
  bindClass,
  bindInstance,
  type LockedMethod,
  markRunning,
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
export class LockedExplorer implements OnModuleInit, OnApplicationBootstrap, OnModuleDestroy {
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

  onApplicationBootstrap(): void {
    markRunning(this.service, true);
  }

  onModuleDestroy(): void {
    this.unregister();
    markRunning(this.service, false);
    for (const type of this.classes) unbindClass(type, this.service);
  }

  /** Binds every instance that exists now. Safe to call again: later calls bind what was made since. */
  bind(): void {
    const controllers = new Set(this.discovery.getControllers());
    for (const wrapper of [...this.discovery.getProviders(), ...controllers]) {
      if (!wrapper.isDependencyTreeStatic() || wrapper.isTransient) {
        const type = wrapper.metatype as { prototype?: unknown } | null;
        const methods = this.lockedMethods(type?.prototype);
        for (const method of methods) prepareLockedMethod(method, this.service);
        if (type && methods.length > 0) {
          bindClass(type, this.service, methods[0]!.where, !wrapper.isDependencyTreeStatic());
          this.classes.add(type);
        }
        if (!wrapper.isDependencyTreeStatic()) continue;
      }
      for (const instance of instancesOf(wrapper)) {
        const methods = this.lockedMethods(Object.getPrototypeOf(instance));
        if (methods.length === 0) continue;
        if (!controllers.has(wrapper) && !isResolver(instance)) refuseRequestKeys(methods);
        refuseRequestKeysOnFieldResolvers(Object.getPrototypeOf(instance) as object, methods);
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

/** GraphQL resolvers are providers that do get requests. */
function isResolver(instance: object): boolean {
  return Reflect.hasMetadata('graphql:resolver_type', instance.constructor);
}

/** A provider that is neither a controller nor a resolver never sees a request: a request key cannot work. */
function refuseRequestKeys(methods: readonly LockedMethod[]): void {
  const bad = methods.find((m) => m.keys.fromRequest);
  if (bad) throw new LockConfigurationError(bad.where, messages.decorator.requestKeyOnProvider(bad.where));
}

/**
 * Nest runs no interceptors on GraphQL field resolvers unless told to (fieldResolverEnhancers), so a request
 * key there could never be read: refused, pointing to an argument key.
 */
function refuseRequestKeysOnFieldResolvers(prototype: object, methods: readonly LockedMethod[]): void {
  for (const method of methods) {
    if (!method.keys.fromRequest) continue;
    const name = method.where.slice(method.where.lastIndexOf('.') + 1);
    const handler: unknown = (prototype as Record<string, unknown>)[name];
    if (typeof handler === 'function' && Reflect.hasMetadata('graphql:resolve_property', handler)) {
      throw new LockConfigurationError(method.where, messages.decorator.fieldResolverRequestKey(method.where));
    }
  }
}

/** The instances made so far: one for a singleton, one per inquirer for a transient provider. */
function instancesOf(wrapper: InstanceWrapper): object[] {
  const candidates = wrapper.isTransient
    ? wrapper.getStaticTransientInstances().map((perContext) => perContext?.instance as unknown)
    : [wrapper.instance as unknown];
  return candidates.filter((instance): instance is object => typeof instance === 'object' && instance !== null);
}
