/**
 * Every sentence a user can read from this library, in one place so that wording stays consistent and each
 * message says what happened and what to do about it. Keys are quoted with JSON.stringify so control
 * characters and very long keys cannot garble a log line; they are cut at 200 characters.
 */
const quote = (key: string): string => JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}…` : key);

export const messages = {
  unavailable: (key: string, waitTimeout: number, promised: boolean) =>
    `Lock ${quote(key)} ${promised ? 'is promised to an owner waiting ahead in line' : 'is held by another owner'}` +
    (waitTimeout > 0
      ? ` and was not free within the ${waitTimeout} ms waitTimeout. ` +
        `Raise waitTimeout, or use onLocked: 'skip' if another instance doing the work is fine.`
      : ` (waitTimeout is 0, so it was tried once). Set waitTimeout to wait for it, or onLocked: 'skip' to skip the call.`),
  lostShutdownTimeout: (key: string, shutdownTimeout: number) =>
    `Lock ${quote(key)} was given up at shutdown: its work was still running ${shutdownTimeout} ms after the ` +
    `lock's signal told it to stop (shutdownTimeout). Stop long work when lock.signal aborts, or raise shutdownTimeout.`,
  shuttingDown: (key: string) =>
    `Lock ${quote(key)} is about to be released: the application is shutting down. Stop the work under it; ` +
    `the lock is kept until the work ends or shutdownTimeout runs out.`,
  lostSuspended: (key: string, reason: string) =>
    `Lock ${quote(key)} was lost: its store became unreachable (${reason}) and onSuspended is 'abort', or the ` +
    `store could not vouch for the lock any longer.`,
  lostConnection: (key: string, reason: string) => `Lock ${quote(key)} was lost: ${reason}`,
  releasedUnderBorrower: (key: string) =>
    `Lock ${quote(key)} was released by the scope that took it, while a handle borrowed from it with acquire() ` +
    `was still unreleased. Release nested handles before the scope ends.`,
  lostReleasedByCaller: (key: string) =>
    `Lock ${quote(key)} was given up by LockService.releaseAll(): work still running under it is no longer exclusive.`,
  lostExpired: (key: string) =>
    `Lock ${quote(key)} was lost: its ttl ran out without an extension. Raise ttl, or leave autoExtend on.`,
  lostExtendRejected: (key: string) =>
    `Lock ${quote(key)} was lost: the store no longer holds it for this owner (it expired and may have been ` +
    `taken by someone else). Work done since may not have been exclusive.`,
  lostExtendFailed: (key: string) =>
    `Lock ${quote(key)} was lost: extending it failed and its validity ran out. Check the store's health.`,
  lostReleaseRejected: (key: string) =>
    `Lock ${quote(key)} had already expired when it was released, so the work under it may not have been ` +
    `exclusive. Raise ttl or leave autoExtend on.`,
  extendAfterRelease: (key: string) =>
    `Lock ${quote(key)} has been released, so it cannot be extended. Take it again if the work goes on.`,
  lostByBackend: (key: string, reason: string) => `Lock ${quote(key)} was lost: ${reason}`,
  lostSibling: (key: string, other: string) =>
    `Lock ${quote(key)} is given up because ${quote(other)}, taken together with it, was lost.`,

  backendFailed: (backend: string, operation: string) =>
    `Lock backend "${backend}" failed to ${operation}. See nodeFailures/cause for what the store said.` +
    consequenceOf(operation),
  serviceClosed: () => `The lock service has shut down (the application is closing); no new locks are taken.`,
  grantSpoiled: (reason: string) =>
    `The store's connection changed while the lock was being granted (${reason}), so the grant could not be ` +
    `trusted and was given back.`,
  storeTimeout: (backend: string, operation: string, timeoutMs: number) =>
    `Lock backend "${backend}" did not answer within ${timeoutMs} ms when asked to ${operation} (operationTimeout). ` +
    `Check the store's health, or raise operationTimeout for a slow store.`,
  initFailed: (backend: string) =>
    `Lock backend "${backend}" could not start: see cause. Check its address, credentials and schema; the ` +
    `application does not start without its lock stores.`,
  factoryFailed: (backend: string) =>
    `The factory of lock backend "${backend}" failed or did not return a lock backend: see cause.`,

  option: {
    notObject: (where: string) => `${where} must be an object.`,
    unknown: (where: string, name: string, known: readonly string[]) =>
      `${where} has no option "${name}". Known options: ${known.join(', ')}.`,
    duration: (name: string, value: unknown, min: number, max: number) =>
      `Option "${name}" must be a whole number of milliseconds from ${min} to ${max} (≈ 24.8 days, the longest ` +
      `timer Node runs), got ${describe(value)}.` +
      (name === 'ttl' && typeof value === 'number' && value > 0 && value < min
        ? ` A shorter ttl leaves nothing after the clock-drift margin (1 % + 2 ms): the lock would be born lost.`
        : ''),
    fraction: (name: string, value: unknown) =>
      `Option "${name}" must be a number from 0 to 1, got ${describe(value)}.`,
    factor: (name: string, value: unknown) => `Option "${name}" must be a number ≥ 1, got ${describe(value)}.`,
    boolean: (name: string, value: unknown) => `Option "${name}" must be true or false, got ${describe(value)}.`,
    choice: (name: string, allowed: readonly string[], value: unknown) =>
      `Option "${name}" must be ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${describe(value)}.`,
    oneOf: (name: string, allowed: readonly string[], value: unknown) =>
      `Option "${name}" must be ${allowed.map((a) => `'${a}'`).join(' or ')} or a function, got ${describe(value)}.`,
    minHoldOverTtl: (minHold: number, ttl: number) =>
      `Option "minHold" (${minHold} ms) must not exceed "ttl" (${ttl} ms): the key could not be kept that long. ` +
      `Raise ttl or lower minHold.`,
    maxDelayUnderDelay: (delay: number, maxDelay: number) =>
      `Option "retry.maxDelay" (${maxDelay} ms) must be ≥ "retry.delay" (${delay} ms).`,
    signal: (value: unknown) => `Option "signal" must be an AbortSignal, got ${describe(value)}.`,
    unknownBackend: (name: string, known: readonly string[]) =>
      `No lock backend is named "${name}". Registered backends: ${known.map((k) => `"${k}"`).join(', ') || 'none'}. ` +
      `Add it to DistributedLockModule.forRoot({ backends }) or fix the backend option.`,
  },

  key: {
    notString: (value: unknown) => `A lock key must be a non-empty string, got ${describe(value)}.`,
    empty: () => `A lock key must be a non-empty string, got "".`,
    tooLong: (length: number, max: number) =>
      `A lock key (keyPrefix not counted) may have at most ${max} characters, got ${length}. ` +
      `Use a shorter key, e.g. an id or a hash of the long part.`,
    nul: () => `A lock key must not contain the NUL character (\\u0000): several stores cannot keep it.`,
    illFormed: () =>
      `A lock key must be well-formed UTF-16: it has a lone surrogate, which stores encoding keys as UTF-8 would ` +
      `turn into U+FFFD, so two different keys would collide. Build keys from whole characters.`,
    noKeys: () => `At least one lock key is needed, got an empty list.`,
    notHeld: (key: string, held: readonly string[]) =>
      `This lock does not hold ${quote(key)}; it holds ${held.map(quote).join(', ')}.`,
  },

  module: {
    noBackends: () =>
      `DistributedLockModule needs at least one backend: forRoot({ backends: { default: new MemoryLockBackend() } }).`,
    notABackend: (name: string) =>
      `backends.${name} is not a lock backend: it needs acquire, release, extend, waitForRelease, isLocked and ` +
      `close methods and a capabilities object (see LockBackend).`,
    keyPrefix: (value: unknown, max: number) =>
      `Option "keyPrefix" must be a string of at most ${max} characters without NUL, got ${describe(value)}.`,
  },

  decorator: {
    notAMethod: (where: string) =>
      `@Locked() can only decorate a method, but ${where} is not one (a property, getter or setter). ` +
      `Move it onto the method that does the work.`,
    staticMethod: (where: string) =>
      `@Locked() works on instance methods of Nest providers and controllers; ${where} is static. ` +
      `Move the work to an instance method, or call LockService.using() inside it.`,
    badKey: (where: string) =>
      `@Locked() on ${where} needs a key: a template string like 'order:{0}', a function (...args) => string, ` +
      `or a non-empty array of them.`,
    badTemplate: (where: string, template: string, reason: string) =>
      `@Locked() on ${where} has a bad key template ${quote(template)}: ${reason}`,
    placeholderBeyondParams: (index: number, count: number) =>
      `placeholder {${index}} reads argument ${index}, but the method declares ${count} parameter(s). ` +
      `Placeholders count arguments from 0.`,
    unresolved: (where: string, template: string, placeholder: string, value: unknown) =>
      `@Locked() on ${where} could not build its key from ${quote(template)}: {${placeholder}} is ${describe(value)}. ` +
      `Pass a value there, or use a key function that handles it.`,
    keyFunctionResult: (where: string, value: unknown) =>
      `@Locked() on ${where}: the key function returned ${describe(value)}; it must return a non-empty string ` +
      `or a non-empty array of non-empty strings.`,
    badKeyAt: (where: string, reason: string) => `@Locked() on ${where}: ${reason}`,
    mixedKeySources: (where: string) =>
      `@Locked() on ${where} mixes placeholders of the request ({params.x}, …) with method arguments ({0}): the ` +
      `request is read before pipes run, the arguments after. Use one kind.`,
    needsRequest: (where: string) =>
      `@Locked() on ${where} builds its key from the request, but was called outside a request (from code, not by ` +
      `the router or a resolver), or where the module's global LockInterceptor does not run: a microservice ` +
      `connected to an HTTP app needs connectMicroservice(options, { inheritAppConfig: true }). Call a method ` +
      `keyed by its arguments, or enable the interceptor there.`,
    guardNeedsRequestKey: (where: string) =>
      `LockGuard on ${where}: a guard runs before pipes, so it can only take a lock whose key reads the HTTP ` +
      `request ({params.x}, {body.x}, …, or requestKey()). Key it by the request, or drop LockGuard: @Locked ` +
      `alone locks the handler.`,
    requestKeyOnProvider: (where: string) =>
      `@Locked() on ${where} reads the request in its key, but ${where.split('.')[0]} is not a controller or ` +
      `resolver: no request reaches it. Key it by its arguments ({0}) instead.`,
    badOptions: (where: string, reason: string) => `${where}: ${reason}`,
    stacked: (where: string) =>
      `@Locked() is applied twice to ${where}. Use one @Locked() with an array of keys, e.g. ` +
      `@Locked(['a:{0}', 'b:{1}']): the keys are then taken together, in a fixed order, all or none.`,
    userMissing: (where: string, template: string) =>
      `@Locked() on ${where} reads {user…} in ${quote(template)}, but the request has no user: the guard that ` +
      `authenticates must run before the lock. Put LockGuard after it (@UseGuards(AuthGuard, LockGuard)), or ` +
      `apply the auth guard at the same level or higher.`,
    badRequestOption: (where: string, name: string, rule: string, value: unknown) =>
      `${where}: request option "${name}" must be ${rule}, got ${describe(value)}.`,
    fieldResolverRequestKey: (where: string) =>
      `@Locked() on ${where} reads the request in its key, but ${where} is a GraphQL field resolver, where Nest runs ` +
      `no interceptors by default. Key it by its arguments ({0}, {1}…), or lock the query/mutation resolver instead.`,
    requestGone: (where: string) =>
      `${where} was not run: its request was given up (a timeout or the client leaving) and its lock let go ` +
      `before the handler started.`,
    ambiguousApp: (where: string) =>
      `@Locked() on ${where} was called on an instance made after bootstrap (request scope, moduleRef.resolve) ` +
      `whose class is in several running apps, so its lock store is unknown. Get the instance from the ` +
      `container at bootstrap, or run one app at a time.`,
    scopedInTwoApps: (where: string) =>
      `@Locked() on ${where}: the provider is request-scoped or transient and its class is already in another ` +
      `running app in this process. Its instances made after bootstrap cannot tell which app's lock store to ` +
      `use. Close the other app first, make the provider a singleton, or inject LockService and call using().`,
    notBound: (where: string) =>
      `@Locked() on ${where} was called on an instance that no DistributedLockModule has initialised: it was ` +
      `created with "new", or the app has not finished bootstrap. Get it from the Nest container (or a testing ` +
      `module importing DistributedLockModule) so the method runs under its lock.`,
    undeclaredObservable: (where: string) =>
      `@Locked() on ${where}: the method returned an Observable but does not declare Observable as its return type, ` +
      `so this call got a Promise and nothing ran. Later calls return a locked Observable; declare the return ` +
      `type, e.g. ": Observable<Order>", so the first call does too.`,
  },
} as const;

/** What a failed store call means for the lock, by what was asked. */
function consequenceOf(operation: string): string {
  if (operation.startsWith('acquire')) return ' The lock was not taken.';
  if (operation.startsWith('release')) {
    return ' The store may still hold the key until it expires or its session ends.';
  }
  if (operation.startsWith('extend')) {
    return ' The lock is trusted only until its validity runs out, unless a later extension succeeds.';
  }
  return '';
}

function describe(value: unknown): string {
  if (typeof value === 'string') return quote(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return String(value);
}
