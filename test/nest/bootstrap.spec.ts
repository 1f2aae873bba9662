import { Inject, Injectable, Module, type OnModuleInit, Scope } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Interval, ScheduleModule } from '@nestjs/schedule';
import {
  DistributedLockModule,
  type DistributedLockModuleOptions,
  Locked,
  LockConfigurationError,
  LockContext,
  type LockedOptions,
  LockService,
  MemoryLockBackend,
} from '../../lib';

const definitionError = (define: () => unknown): LockConfigurationError => {
  try {
    define();
  } catch (error) {
    expect(error).toBeInstanceOf(LockConfigurationError);
    return error as LockConfigurationError;
  }
  throw new Error('expected a LockConfigurationError when the class is defined');
};

describe('@Locked checks its key when the class is defined', () => {
  it.each([
    ['a placeholder beyond the parameters', 'order:{1}', /\{1\} reads argument 1, but the method declares 1 parameter/],
    ['an unclosed brace', 'order:{0', /never closed/],
    ['a lone closing brace', 'order:0}', /lone "}"/],
    ['a placeholder that is not an argument index', 'order:{params.id}', /\{params\.id\} is not a placeholder/],
    ['an empty path segment', 'order:{0.}', /\{0\.\} is not a placeholder/],
    ['an empty template', '', /needs a key/],
  ])('refuses %s', (_label, template, rule) => {
    const error = definitionError(() => {
      class Service {
        @Locked(template)
        run(id: string): string {
          return id;
        }
      }
      return Service;
    });
    expect(error.message).toMatch(rule);
    expect(error.message).toContain('Service.run');
  });

  it('accepts escaped braces as literal text', async () => {
    class Service {
      @Locked('{{literal}}:{0}')
      async run(_id: string): Promise<readonly string[]> {
        return LockContext.current()!.keys;
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      providers: [Service],
    }).compile();
    const app = await moduleRef.init();
    expect(await app.get(Service).run('1')).toEqual(['{literal}:1']);
    await app.close();
  });

  it.each([
    ['an empty array', []],
    ['a number', 5],
  ])('refuses %s as the key', (_label, key) => {
    definitionError(() => {
      class Service {
        @Locked(key as never)
        run(): void {}
      }
      return Service;
    });
  });

  it('refuses a property, a getter and a static method', () => {
    class Target {
      get value(): number {
        return 1;
      }
    }
    const getter = Object.getOwnPropertyDescriptor(Target.prototype, 'value')!;
    expect(definitionError(() => Locked('k')(Target.prototype, 'value', getter)).message).toMatch(
      /only decorate a method/,
    );
    expect(definitionError(() => Locked('k')(Target.prototype, 'field', undefined as never)).message).toMatch(
      /Target\.field/,
    );
    const staticError = definitionError(() => {
      class WithStatic {
        @Locked('k')
        static run(): void {}
      }
      return WithStatic;
    });
    expect(staticError.message).toMatch(/WithStatic\.run is static/);
  });
});

describe('bootstrap fails on configuration that can never work', () => {
  const bootstrap = async (options: LockedOptions, moduleOptions?: Partial<DistributedLockModuleOptions>) => {
    class Service {
      @Locked('k', options)
      async run(): Promise<void> {}
    }
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() }, ...moduleOptions })],
      providers: [Service],
    }).compile();
    return moduleRef.init();
  };

  it.each([
    ['an unknown backend', { backend: 'redis' }, /No lock backend is named "redis"/],
    ['a bad ttl', { ttl: -1 }, /@Locked\(\) on [A-Za-z]+\.[a-z]+: Option "ttl" must be a whole number of milliseconds/],
    ['a misspelt option', { waitTimout: 5 } as LockedOptions, /no option "waitTimout"/],
  ])('@Locked with %s', async (_label, options, rule) => {
    await expect(bootstrap(options)).rejects.toThrow(rule);
  });

  it('@Locked whose minHold exceeds the module default ttl', async () => {
    await expect(bootstrap({ minHold: 20_000 }, { defaults: { ttl: 10_000 } })).rejects.toThrow(
      /"minHold" \(20000 ms\)/,
    );
  });

  it.each([
    ['no backends', { backends: {} }, /at least one backend/],
    ['a bad default', { backends: { default: new MemoryLockBackend() }, defaults: { waitTimeout: -1 } }, /waitTimeout/],
  ])('the module with %s', async (_label, options, rule) => {
    const compiling = Test.createTestingModule({
      imports: [DistributedLockModule.forRoot(options as DistributedLockModuleOptions)],
    })
      .compile()
      .then((moduleRef) => moduleRef.init());
    await expect(compiling).rejects.toThrow(rule);
  });
});

describe('DistributedLockModule', () => {
  it('forRootAsync builds its options from injected providers', async () => {
    const CONFIG = Symbol('config');
    @Module({ providers: [{ provide: CONFIG, useValue: { prefix: 'async:' } }], exports: [CONFIG] })
    class ConfigModule {}
    const backend = new MemoryLockBackend();
    const moduleRef = await Test.createTestingModule({
      imports: [
        DistributedLockModule.forRootAsync({
          imports: [ConfigModule],
          inject: [CONFIG],
          useFactory: (config: { prefix: string }) => ({ backends: { default: backend }, keyPrefix: config.prefix }),
        }),
      ],
    }).compile();
    const app = await moduleRef.init();
    const lock = await app.get(LockService).acquire('k');
    expect(await backend.isLocked('async:k')).toBe(true);
    await lock.release();
    await app.close();
  });

  it('serves one static module definition to several apps in turn; closes only backends it made', async () => {
    const shared = new MemoryLockBackend();
    const made: MemoryLockBackend[] = [];
    const lockModule = DistributedLockModule.forRoot({
      backends: { default: shared, own: () => (made[made.length] = new MemoryLockBackend()) },
      // Locks nobody releases are given up at once at shutdown, instead of after a grace period.
      shutdownTimeout: 0,
    });
    for (let run = 0; run < 2; run++) {
      const app = await (await Test.createTestingModule({ imports: [lockModule] }).compile()).init();
      await app.get(LockService).acquire('k');
      await app.get(LockService).acquire('k', { backend: 'own' });
      await app.close();
      expect(await shared.isLocked('k')).toBe(false);
      await expect(made[run]!.isLocked('k')).rejects.toThrow(/closed/);
    }
    expect(made).toHaveLength(2);
  });

  it('isGlobal makes LockService injectable in every module', async () => {
    @Injectable()
    class Feature {
      constructor(readonly locks: LockService) {}
    }
    @Module({ providers: [Feature] })
    class FeatureModule {}
    const moduleRef = await Test.createTestingModule({
      imports: [
        DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() }, isGlobal: true }),
        FeatureModule,
      ],
    }).compile();
    const app = await moduleRef.init();
    expect(app.get(Feature).locks).toBe(app.get(LockService));
    await app.close();
  });

  it('binds @Locked methods even when another module calls one from its onModuleInit first', async () => {
    @Injectable()
    class Warmup {
      @Locked('warmup')
      async run(): Promise<boolean> {
        return LockContext.current() !== undefined;
      }
    }
    @Injectable()
    class EarlyCaller implements OnModuleInit {
      result: boolean | undefined;
      constructor(@Inject(Warmup) private readonly warmup: Warmup) {}
      async onModuleInit(): Promise<void> {
        this.result = await this.warmup.run();
      }
    }
    @Module({ providers: [Warmup, EarlyCaller] })
    class DeepModule {}
    @Module({ imports: [DeepModule] })
    class MiddleModule {}
    const moduleRef = await Test.createTestingModule({
      imports: [MiddleModule, DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
    }).compile();
    const app = await moduleRef.init();
    expect(app.get(EarlyCaller).result).toBe(true);
    await app.close();
  });

  it('locks methods of request-scoped providers too', async () => {
    @Injectable({ scope: Scope.TRANSIENT })
    class PerUse {
      @Locked('scoped:{0}')
      async run(_id: string): Promise<readonly string[]> {
        return LockContext.current()!.keys;
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      providers: [PerUse],
    }).compile();
    const app = await moduleRef.init();
    const instance = await app.resolve(PerUse);
    expect(await instance.run('1')).toEqual(['scoped:1']);
    await app.close();
  });

  it('keeps two apps in one process apart, each on its own backend', async () => {
    @Injectable()
    class Shared {
      @Locked('shared')
      async run(): Promise<string> {
        return LockContext.current()!.backend;
      }
    }
    const start = async (backend: MemoryLockBackend) =>
      (
        await Test.createTestingModule({
          imports: [DistributedLockModule.forRoot({ backends: { default: backend } })],
          providers: [Shared],
        }).compile()
      ).init();
    const [a, b] = [new MemoryLockBackend(), new MemoryLockBackend()];
    const [appA, appB] = [await start(a), await start(b)];
    const holder = await appA.get(LockService).acquire('shared');
    await expect(appB.get(Shared).run()).resolves.toBe('default');
    await expect(appA.get(Shared).run()).rejects.toMatchObject({ code: 'LOCK_UNAVAILABLE' });
    await holder.release();
    await Promise.all([appA.close(), appB.close()]);
  });

  it('binds transient instances per app: two apps in one process never share a store', async () => {
    @Injectable({ scope: Scope.TRANSIENT })
    class PerUse {
      @Locked('transient')
      async run(): Promise<string> {
        return 'ran';
      }
    }
    @Injectable()
    class Consumer {
      constructor(@Inject(PerUse) readonly perUse: PerUse) {}
    }
    const start = async (backend: MemoryLockBackend) =>
      (
        await Test.createTestingModule({
          imports: [DistributedLockModule.forRoot({ backends: { default: backend } })],
          providers: [PerUse, Consumer],
        }).compile()
      ).init();
    const [a, b] = [new MemoryLockBackend(), new MemoryLockBackend()];
    const appA = await start(a);
    const appB = await start(b).catch((e: unknown) => e);
    // The class is transient in a running app already: instances made later could not tell their app apart.
    expect(appB).toMatchObject({ code: 'LOCK_CONFIGURATION' });
    expect((appB as Error).message).toMatch(/PerUse\.run.*another running app/);
    const holderB = await new LockService({ backends: { default: b } }).acquire('transient');
    // App A's instance runs on A's store, whatever else was bootstrapped in the process.
    await expect(appA.get(Consumer).perUse.run()).resolves.toBe('ran');
    await holderB.release();
    await appA.close();
    // Once A is gone, another app may have the class.
    const appC = await start(b);
    await expect(appC.get(Consumer).perUse.run()).resolves.toBe('ran');
    await appC.close();
  });

  it('binds a provider made after an early @Locked call (from an async factory) at bootstrap', async () => {
    @Injectable()
    class Warm {
      // Made once the lock module exists, as a provider that uses locks is.
      constructor(readonly locks: LockService) {}
      @Locked('warm')
      async run(): Promise<string> {
        return 'warm';
      }
    }
    @Injectable()
    class Later {
      constructor(@Inject('WARMED') readonly warmed: string) {}
      @Locked('later')
      async run(): Promise<string> {
        return `later after ${this.warmed}`;
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
      providers: [Warm, { provide: 'WARMED', useFactory: (warm: Warm) => warm.run(), inject: [Warm] }, Later],
    }).compile();
    const app = await moduleRef.init();
    await expect(app.get(Later).run()).resolves.toBe('later after warm');
    await app.close();
  });

  it('refuses two @Locked decorators on one method when the class is defined', () => {
    expect(() => {
      class Twice {
        @Locked('a')
        @Locked('b')
        async run(): Promise<void> {}
      }
      return Twice;
    }).toThrow(/applied twice to Twice\.run.*array of keys/);
  });
});

describe('@Locked with @nestjs/schedule', () => {
  it('the scheduler calls the locked method, whichever decorator comes first and module initialises first', async () => {
    const seen: Array<bigint | undefined> = [];
    const seenReversed: Array<bigint | undefined> = [];
    @Injectable()
    class Job {
      @Interval(10)
      @Locked('jobs:tick', { onLocked: 'skip' })
      async tick(): Promise<void> {
        seen.push(LockContext.current()?.fencingToken);
      }

      @Locked('jobs:tock', { onLocked: 'skip' })
      @Interval(10)
      async tock(): Promise<void> {
        seenReversed.push(LockContext.current()?.fencingToken);
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [
        ScheduleModule.forRoot(),
        DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } }),
      ],
      providers: [Job],
    }).compile();
    const app = await moduleRef.init();
    for (let i = 0; i < 200 && (seen.length < 2 || seenReversed.length < 2); i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await app.close();
    for (const calls of [seen, seenReversed]) {
      expect(calls.length).toBeGreaterThanOrEqual(2);
      expect(calls.every((token) => typeof token === 'bigint')).toBe(true);
      expect(calls[1]!).toBeGreaterThan(calls[0]!);
    }
  });
});
