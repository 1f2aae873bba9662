import { performance } from 'node:perf_hooks';
import { validityMs } from '../../core/backoff';
import { LockBackendClosedError, LockBackendError, LockConfigurationError } from '../../core/errors';
import { messages } from '../../core/messages';
import { NEVER_ABORTED } from '../../core/never-aborted';
import { SharedStart } from '../../core/shared-start';
import type {
  AcquireOutcome,
  AcquireRequest,
  ConnectionChange,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  StoreCall,
  WaitForRelease,
} from '../lock-backend';
import { ConnectionWatch } from './connection-watch';
import { FencingLedger } from './fencing-ledger';
import {
  judgeAcquire,
  judgeConfirmed,
  judgeLocked,
  judgeReachable,
  judgeTakeable,
  type AcquireAnswer,
  type ProbeAnswer,
  type Verdict,
} from './judges';
import { lockKeyNames, type LockKeyNames } from './key-names';
import { ownClients } from './own-clients';
import { onEveryNode, quorumOf, type Judge, type Tally } from './quorum';
import {
  assertDistinctAddresses,
  resolveOptions,
  type RedlockBackendOptions,
  type ResolvedRedlockOptions,
} from './options';
import { closeClient, RedisNode } from './redis-node';
import { scripts } from './scripts';
import { WakeHub, type WakeMark } from './wake-hub';

/** Bound on init() waiting for connections, beside the caller's signal. */
const INIT_TIMEOUT_MS = 10_000;
/** Past a hand-off's end before a waiter behind looks again: node clocks count whole ms, timers run late. */
const HANDOFF_MARGIN_MS = 5;
/**
 * What acquire, release, extend and isLocked pass to ask() instead of the caller's signal: each is bounded by
 * nodeTimeout per node anyway, and a caller that stops waiting is answered by the core at once, which also gives
 * back an acquire that lands after it left. Reading the caller's signal would make an AbortController per call.
 */
const UNCANCELLED = undefined;

/** A waiter's place, kept between its attempts on one key. */
interface Waiting {
  /** Its score in the line on every node: when it first asked, µs since the epoch. */
  readonly arrival: string;
  /** Where each node's announcements stood when its last attempt was sent. */
  marks: (WakeMark | undefined)[] | undefined;
  at: number;
  /**
   * Single node: the last refused attempt — its number, when it was sent (performance.now()) and how long it
   * took to come back (ms).
   */
  refused: { readonly attempt: number; readonly sentAt: number; readonly roundTrip: number } | undefined;
  /** Single node: the key a release handed straight to this owner, as announced (see scripts.ts, grant). */
  handed: HandedOver | undefined;
}

/** A key handed over by a release: '=owner token attempt px'. */
interface HandedOver {
  readonly token: string;
  /** The number of the waiter's attempt that last joined the line before the hand-over. */
  readonly attempt: number;
  readonly px: number;
}

/** A hand-over with less time left than this is not worth trusting: the owner takes the key the usual way. */
const MIN_HANDED_MS = 5;

/**
 * Locks on one Redis master, or Redlock over N independent masters (quorum ⌊N/2⌋+1), with fencing tokens,
 * a fair FIFO line per key and waits woken by the release itself. How each part works, and what it assumes,
 * is written beside it: scripts.ts (the atomic steps), key-names.ts, judges.ts (quorum decisions),
 * wake-hub.ts (waiting without polling), fencing-ledger.ts, and the README's Redis section.
 */
export class RedlockBackend implements LockBackend {
  readonly kind = 'redlock';
  readonly capabilities: LockBackendCapabilities = {
    expiring: true,
    sessionBound: false,
    nativeWait: true,
    queued: true,
  };
  private readonly options: ResolvedRedlockOptions;
  private readonly nodes: readonly RedisNode[];
  private readonly hubs: readonly WakeHub[];
  private readonly quorum: number;
  private readonly ledger: FencingLedger | undefined;
  private readonly waits = new Map<string, Waiting>();
  /** Keys handed straight to an owner by a release, until its first extension confirms them. */
  private readonly unconfirmed = new Set<string>();
  /** Acquire attempts sent so far (see acquire: each has its own number). */
  private attempts = 0;
  private readonly watch: ConnectionWatch;
  /** close() stops it with the closed error: a start it interrupts fails with that. */
  private readonly starting = new SharedStart((signal) => this.connect(signal));
  private closing: Promise<void> | undefined;

  constructor(options: RedlockBackendOptions) {
    this.options = resolveOptions(options);
    const owned = ownClients(this.options.nodes);
    assertDistinctAddresses([...this.options.clients, ...owned], owned.length);
    this.nodes = [
      ...this.options.clients.map((client) => new RedisNode(client, false)),
      ...owned.map((client) => new RedisNode(client, true)),
    ];
    this.hubs = this.nodes.map((node) => new WakeHub(node));
    this.quorum = quorumOf(this.nodes.length);
    this.ledger = this.nodes.length > 1 ? new FencingLedger() : undefined;
    this.watch = new ConnectionWatch(this.nodes);
  }

  /** Connects every node and checks a quorum answers; opens the connections that carry release announcements. */
  init(signal: AbortSignal = NEVER_ABORTED): Promise<void> {
    // Rejects rather than throws: `void backend.init().catch(report)` must not become an uncaught exception.
    if (this.closing) return Promise.reject(this.closedError('connect to Redis'));
    // Callers at once share one start, each waiting with its own signal; close() stops it (see SharedStart).
    return this.starting.join(signal);
  }

  async ping(signal: AbortSignal): Promise<void> {
    const preparing = this.prepared({ signal }, 'reach Redis');
    if (preparing) await preparing;
    await this.ask(
      'reach Redis',
      async (node) => {
        await node.ping();
        return true as const;
      },
      judgeReachable,
      signal,
    );
  }

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    const calledAt = performance.now();
    const preparing = this.prepared(request, 'acquire a lock');
    if (preparing) await preparing;
    const id = `${request.key}\u0000${request.owner}`;
    // Looked up only when someone waits: hashing a fresh id string on every uncontended call is measurable.
    const waiting = this.waits.size > 0 ? this.waits.get(id) : undefined;
    const handed = waiting && handedOver(waiting, calledAt);
    if (handed) {
      this.waits.delete(id);
      // Bounded: an entry the core never confirms (its lease lost at once) is dropped by its release.
      if (this.unconfirmed.size < 1024) this.unconfirmed.add(id);
      return handed;
    }
    if (waiting) waiting.handed = undefined;
    const arrival = waiting?.arrival ?? arrivalScore();
    const keep = request.keepPlace ? '1' : '0';
    const names = this.namesFor(request.key);
    // Taken before the attempt is sent: announcements after this point may be about this attempt's outcome.
    const marks = request.keepPlace ? this.hubs.map((hub, i) => hub.mark(names[i]!.channel)) : undefined;
    const answers: (AcquireAnswer | undefined)[] = [];
    const { handoffTimeout, placeTtl } = this.options;
    // Numbered across the backend, whatever their outcome: an attempt that joined the line but whose answer was
    // lost must not share its number with a later one (see handedOver).
    const attempt = ++this.attempts;
    // Keys are handed straight to a waiter on one node only: over several, each node's line would hand the key
    // to its own first, and a quorum of hand-overs could not be told apart from a split.
    const direct = this.nodes.length === 1 ? String(attempt) : '0';
    const sentAt = performance.now();
    let outcome: AcquireOutcome;
    try {
      outcome = await this.ask(
        'acquire a lock',
        async (node, i) => {
          const { keys, channel } = names[i]!;
          const answer = (await node.run(scripts.acquire, keys, [
            request.owner,
            request.ttl,
            keep,
            arrival,
            placeTtl,
            handoffTimeout,
            channel,
            this.hubs[i]!.own,
            direct,
          ])) as AcquireAnswer;
          answers[i] = answer;
          return answer;
        },
        judgeAcquire,
        UNCANCELLED,
      );
    } catch (error) {
      this.undoVotes(request, names, answers);
      throw error;
    }
    if (outcome.acquired) {
      // Only this owner's own earlier attempts on this key (made one after another) add its entry.
      if (waiting) this.waits.delete(id);
      this.ledger?.record(id, outcome.fencingToken, request.ttl);
      return outcome;
    }
    this.undoVotes(request, names, answers);
    if (!request.keepPlace) return outcome;
    const roundTrip = performance.now() - sentAt;
    this.remember(id, waiting, arrival, marks, direct === '0' ? undefined : { attempt, sentAt, roundTrip });
    return { ...outcome, queued: true };
  }

  async release(lease: LeaseRef, call: StoreCall): Promise<boolean> {
    const preparing = this.prepared(call, 'release a lock');
    if (preparing) await preparing;
    const id = `${lease.key}\u0000${lease.owner}`;
    if (this.waits.size > 0) this.waits.delete(id);
    if (this.unconfirmed.size > 0) this.unconfirmed.delete(id);
    const token = this.ledger?.take(id) ?? '';
    const names = this.namesFor(lease.key);
    const handoff = this.options.handoffTimeout;
    return this.ask(
      'release a lock',
      (node, i) =>
        node.giveBack(names[i]!.keys, [lease.owner, token, '0', handoff, names[i]!.channel]) as Promise<number>,
      judgeConfirmed,
      UNCANCELLED,
    );
  }

  async extend(lease: LeaseRef, ttl: number, call: StoreCall): Promise<boolean> {
    const preparing = this.prepared(call, 'extend a lock');
    if (preparing) await preparing;
    const names = this.namesFor(lease.key);
    const confirms = this.unconfirmed.delete(`${lease.key}\u0000${lease.owner}`);
    const extended = await this.ask(
      'extend a lock',
      (node, i) =>
        node.run(
          scripts.extend,
          names[i]!.keys,
          confirms ? [lease.owner, ttl, names[i]!.channel] : [lease.owner, ttl],
        ) as Promise<number>,
      judgeConfirmed,
      UNCANCELLED,
    );
    if (extended) this.ledger?.extended(`${lease.key}\u0000${lease.owner}`, ttl);
    return extended;
  }

  async isLocked(key: string, call: StoreCall): Promise<boolean> {
    const preparing = this.prepared(call, 'read a lock');
    if (preparing) await preparing;
    return this.ask('read a lock', (node, i) => this.probe(node, i, key, ''), judgeLocked, UNCANCELLED);
  }

  /**
   * Waits for an announcement on the key's channel on any node — addressed to this owner (its turn in line),
   * or to everyone (freed with nobody in line) — or for the timeout. When a quorum of channels was subscribed
   * throughout since the owner's last attempt, what was announced meanwhile is already known and no command is
   * needed; otherwise it subscribes and then asks the nodes whether the key is free for it, so a release
   * between the attempt and the subscription is not missed.
   *
   * A key offered to a waiter ahead that never comes for it (it died, or gave up without withdrawing) frees
   * silently when its hand-off lapses: so an offer to another owner, unless that owner is announced to have
   * taken the key ('+owner'), wakes this waiter once the hand-off is over, to try again.
   */
  waitForRelease(wait: WaitForRelease): Promise<void> {
    if (this.closing || wait.signal.aborted) return Promise.resolve();
    const waiting = this.waits.get(`${wait.key}\u0000${wait.owner}`);
    const queued = waiting !== undefined;
    const wakesMe = (target: string): boolean => target === wait.owner || target === '' || !queued;
    const names = this.namesFor(wait.key);
    return new Promise<void>((resolve) => {
      let done = false;
      let handoff: NodeJS.Timeout | undefined;
      const stops: Array<() => void> = [];
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearTimeout(handoff);
        wait.signal.removeEventListener('abort', finish);
        for (const stop of stops) stop();
        resolve();
      };
      /** Looks again `ms` after the latest offer to another owner (margin: the server counts whole ms). */
      const lookAgainIn = (ms: number): void => {
        clearTimeout(handoff);
        handoff = setTimeout(finish, ms + HANDOFF_MARGIN_MS);
        handoff.unref();
      };
      const consider = (target: string): void => {
        if (done) return;
        if (target.startsWith('=')) {
          const handed = parseHandedOver(target, wait.owner);
          if (handed === undefined) return lookAgainIn(this.options.handoffTimeout);
          if (waiting) waiting.handed = handed;
          return finish();
        }
        if (wakesMe(target)) return finish();
        if (target.startsWith('+')) {
          clearTimeout(handoff);
          handoff = undefined;
        } else {
          lookAgainIn(this.options.handoffTimeout);
        }
      };
      const timer = setTimeout(finish, wait.timeoutMs);
      timer.unref();
      wait.signal.addEventListener('abort', finish, { once: true });
      const subscriptions = this.hubs.map((hub, i) => hub.listen(names[i]!.channel, consider));
      for (const s of subscriptions) stops.push(s.stop);
      let covered = 0;
      for (let i = 0; i < this.hubs.length; i++) {
        const mark = waiting?.marks?.[i];
        const since = mark ? this.hubs[i]!.since(names[i]!.channel, mark) : undefined;
        if (since === undefined) {
          // Not covered (the key's channel was not subscribed throughout, as before a first wait on it), but what
          // the scripts told this process's waiters on its own channel meanwhile is known: a turn or a key handed
          // over to this waiter in that gap still counts. The nodes are asked below all the same.
          const told = mark ? this.hubs[i]!.sinceOwn(names[i]!.channel, mark) : undefined;
          for (const target of told ?? []) consider(target);
          if (done) return;
          continue;
        }
        for (const target of since) consider(target);
        if (done) return;
        covered++;
      }
      // Any release freeing the key on a majority reaches at least one of a quorum of subscribed channels.
      if (covered >= this.quorum) return;
      // The same holds for the check below once a quorum is subscribed: a hung node's subscription, which may
      // never be confirmed, must not hold the check back (the wait would then miss a release made meanwhile).
      let promisedForMs = Infinity;
      void enoughSubscribed(
        subscriptions.map((s) => s.ready),
        this.quorum,
        this.options.nodeTimeout,
      )
        .then(() => {
          if (done) return false;
          return this.ask(
            'wait for a lock',
            async (node, i) => {
              const answer = await this.probe(node, i, wait.key, wait.owner, queued);
              if (answer[0] === 2) promisedForMs = Math.min(promisedForMs, answer[1]);
              return answer;
            },
            judgeTakeable,
            wait.signal,
          );
        })
        .then(
          (takeable) => {
            if (takeable) finish();
            // Offered to another before this wait listened: look again when that offer lapses.
            else if (!done && Number.isFinite(promisedForMs)) lookAgainIn(promisedForMs);
          },
          // The nodes could not tell: the timeout is the fallback, and the next attempt will report the error.
          () => undefined,
        );
    });
  }

  watchConnection(listener: (change: ConnectionChange) => void): () => void {
    return this.watch.watch(listener);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.starting.stop(this.closedError('connect to Redis'));
      this.watch.close();
      for (const node of this.nodes) node.detach();
      await this.withdrawPlaces();
      this.waits.clear();
      this.unconfirmed.clear();
      await Promise.allSettled(this.hubs.map((hub) => hub.close()));
      await Promise.allSettled(this.nodes.filter((node) => node.owned).map((node) => closeClient(node.client)));
    })();
    return this.closing;
  }

  private async connect(signal: AbortSignal): Promise<void> {
    const bounded = AbortSignal.any([signal, AbortSignal.timeout(INIT_TIMEOUT_MS)]);
    const servers: (string | undefined)[] = [];
    const checks: Promise<unknown>[] = [];
    await this.ask(
      'connect to Redis',
      (node, i) => {
        const check = (async () => {
          await node.connect(bounded);
          await node.ping();
          // A user whose ACL denies INFO still gets a working backend, only without this check.
          servers[i] = await node.serverId().catch(() => undefined);
          return true as const;
        })();
        checks.push(check);
        return check;
      },
      judgeReachable,
      signal,
      INIT_TIMEOUT_MS,
    );
    // The quorum answered; the others get a moment more, so that two addresses of one server are seen as such.
    await settledWithin(checks, this.options.nodeTimeout);
    this.assertDistinctServers(servers);
    for (const node of this.nodes) if (node.connected) node.loadScriptsNow();
    // A waiter's turn is told on its hub's own channel: the first waits after init must not miss it. Waited for
    // only on nodes that answered: a hung or down node was already given its nodeTimeout above.
    const subscribed = this.hubs.map((hub) => hub.start());
    await settledWithin(
      subscribed.filter((_, i) => this.nodes[i]!.connected),
      this.options.nodeTimeout,
    );
  }

  /** One server reached through two clients (a host alias, a proxy) would count twice towards the quorum. */
  private assertDistinctServers(servers: readonly (string | undefined)[]): void {
    const seen = new Map<string, number>();
    servers.forEach((id, i) => {
      if (id === undefined) return;
      const first = seen.get(id);
      if (first === undefined) return void seen.set(id, i);
      throw new LockConfigurationError(
        'clients',
        `RedlockBackend options: ${this.nodes[first]!.label} and ${this.nodes[i]!.label} are the same Redis server ` +
          `(run_id ${id}); each Redlock node must be a separate Redis master.`,
      );
    });
  }

  /**
   * Fast once initialised; a backend used without init() (a LockService of its own) connects on first use.
   * Takes the call rather than its signal: the core makes a call's AbortSignal only when it is read, and
   * making one costs more than the rest of a cycle's client work.
   */
  private prepared(call: StoreCall, operation: string): Promise<void> | undefined {
    this.assertOpen(operation);
    // Nothing to wait for once initialised: an await would cost each call a promise and a turn of the queue.
    return this.starting.started ? undefined : this.init(call.signal);
  }

  private probe(node: RedisNode, i: number, key: string, owner: string, queued = false): Promise<ProbeAnswer> {
    return node.run(scripts.probe, this.namesFor(key)[i]!.keys, [owner, queued ? '1' : '0']) as Promise<ProbeAnswer>;
  }

  /** Runs one call on every node and turns the verdict into a result or a LockBackendError naming each node. */
  private async ask<T, R>(
    operation: string,
    call: (node: RedisNode, index: number) => Promise<T>,
    judge: (tally: Tally<T>, complete: boolean) => Verdict<R> | undefined,
    signal: AbortSignal | undefined,
    timeoutMs = this.options.nodeTimeout,
  ): Promise<R> {
    let verdict: Verdict<R>;
    let failures: Tally<T>['failures'] = [];
    try {
      const keepFailures: Judge<T, Verdict<R>> = (tally, complete) => {
        failures = tally.failures;
        return judge(tally, complete);
      };
      verdict = await onEveryNode(this.nodes, call, keepFailures, { signal, timeoutMs });
    } catch (error) {
      throw new LockBackendError(
        this.kind,
        `${messages.backendFailed(this.kind, operation)} The call was cancelled.`,
        [],
        {
          cause: error,
        },
      );
    }
    if (!verdict.failed) return verdict.value;
    const detail = failures.map((f) => `${f.node}: ${describe(f.error)}`).join('; ');
    throw new LockBackendError(
      this.kind,
      `${messages.backendFailed(this.kind, operation)} ${failures.length} of ${this.nodes.length} Redis node(s) ` +
        `failed, and ${this.quorum} must answer: ${detail}. Check that the Redis nodes run and are reachable.`,
      failures.map((f) => ({ node: f.node, error: f.error })),
    );
  }

  /**
   * Gives back the votes of a failed Redlock round at once, keeping the place in line: a stale vote would
   * otherwise block every other contender until its ttl ran out. Sent to every node that did not refuse — also
   * those yet to answer, where it follows their answer (RedisNode.run keeps one owner's calls in order) — and
   * kept for nodes not connected now, for ioredis may send the attempt again when they are back
   * (RedisNode.giveBack).
   */
  private undoVotes(
    request: AcquireRequest,
    names: readonly LockKeyNames[],
    answers: readonly (AcquireAnswer | undefined)[],
  ): void {
    const keep = request.keepPlace ? '1' : '0';
    this.nodes.forEach((node, i) => {
      const answer = answers[i];
      if (answer !== undefined && answer[0] !== 1) return;
      node
        .giveBack(names[i]!.keys, [request.owner, '', keep, this.options.handoffTimeout, names[i]!.channel])
        .catch(() => undefined);
    });
  }

  /**
   * Withdraws the places in line of callers still waiting through this backend, which can no longer come back
   * for their turn: a place left behind would be offered the key at the next release and hold up the waiter
   * behind it for handoffTimeout, and until its deadline (placeTtl) if nobody ever releases. Bounded by
   * nodeTimeout; what does not reach a node lapses there.
   */
  private async withdrawPlaces(): Promise<void> {
    const calls: Promise<unknown>[] = [];
    for (const id of this.waits.keys()) {
      const split = id.lastIndexOf('\u0000');
      const key = id.slice(0, split);
      const owner = id.slice(split + 1);
      const names = this.namesFor(key);
      this.nodes.forEach((node, i) => {
        if (!node.connected) return;
        const { keys, channel } = names[i]!;
        calls.push(
          node
            .run(scripts.release, keys, [owner, '', '0', this.options.handoffTimeout, channel])
            .catch(() => undefined),
        );
      });
    }
    if (calls.length > 0) await settledWithin(calls, this.options.nodeTimeout);
  }

  private remember(
    id: string,
    waiting: Waiting | undefined,
    arrival: string,
    marks: Waiting['marks'],
    refused: Waiting['refused'],
  ): void {
    const now = Date.now();
    if (waiting) {
      waiting.marks = marks;
      waiting.at = now;
      waiting.refused = refused;
      return;
    }
    if (this.waits.size > 1024) {
      // Places the core never withdrew (it walked away from a call) lapse on the nodes after placeTtl.
      for (const [key, entry] of this.waits) if (now - entry.at > this.options.placeTtl) this.waits.delete(key);
    }
    this.waits.set(id, { arrival, marks, at: now, refused, handed: undefined });
  }

  private namesFor(key: string): readonly LockKeyNames[] {
    let plain: LockKeyNames | undefined;
    let cluster: LockKeyNames | undefined;
    return this.nodes.map((node) =>
      node.cluster ? (cluster ??= lockKeyNames(key, true)) : (plain ??= lockKeyNames(key, false)),
    );
  }

  private assertOpen(operation: string): void {
    if (this.closing) throw this.closedError(operation);
  }

  private closedError(operation: string): LockBackendError {
    return new LockBackendClosedError(this.kind, operation);
  }
}

/**
 * The key a release handed to this waiter, as an acquire outcome, if it can still be trusted for a while. The
 * announcement names the waiter's attempt that had last joined the line when the release ran; if that is its
 * last refused attempt, the hand-over came after that attempt reached Redis, so after it was sent at `sentAt`
 * here — a bound by this process's own clock alone. (An announcement naming an earlier attempt is stale: a later
 * one was refused, so that hand-over lapsed.) The grant is then trusted for px from sentAt, less the core's drift
 * allowance (validityMs: clocks that run at rates within 1 % of each other, Redlock's assumption).
 */
function handedOver(waiting: Waiting, calledAt: number): AcquireOutcome | undefined {
  const { handed, refused } = waiting;
  if (!handed || !refused || handed.attempt !== refused.attempt) return undefined;
  const provisionalForMs = Math.floor(validityMs(handed.px) - (calledAt - refused.sentAt));
  // The confirmation (extend) takes a round trip: with less than two left, its answer would likely come after
  // the grant stops being trusted, and the lock be reported lost though Redis keeps it (extended) for the
  // waiter. The usual acquire, a round trip too, re-enters the key for the whole ttl instead.
  if (!(provisionalForMs >= Math.max(MIN_HANDED_MS, 2 * refused.roundTrip))) return undefined;
  return { acquired: true, fencingToken: BigInt(handed.token), provisionalForMs };
}

/** '=owner token attempt px' addressed to `owner`, or undefined (another owner's, or not well formed). */
function parseHandedOver(target: string, owner: string): HandedOver | undefined {
  const [who, token, attempt, px] = target.slice(1).split(' ');
  if (who !== owner || !token || !/^\d+$/.test(token)) return undefined;
  const n = Number(attempt);
  const ms = Number(px);
  if (!Number.isSafeInteger(n) || n <= 0 || !Number.isSafeInteger(ms) || ms <= 0) return undefined;
  return { token, attempt: n, px: ms };
}

/** µs since the epoch: the same score on every node, so every node orders the line alike. */
function arrivalScore(): string {
  return String(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/** Resolves once `needed` subscriptions are confirmed, all have settled, or `ms` passed. */
function enoughSubscribed(ready: readonly Promise<boolean>[], needed: number, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    let confirmed = 0;
    let settled = 0;
    const timer = setTimeout(resolve, ms);
    timer.unref();
    const count = (ok: boolean): void => {
      if (ok) confirmed++;
      if (++settled === ready.length || confirmed >= needed) {
        clearTimeout(timer);
        resolve();
      }
    };
    if (ready.length === 0) count(false);
    for (const r of ready) void r.then(count, () => count(false));
  });
}

/** Waits for `work` to settle, or `ms`, whichever comes first. */
async function settledWithin(work: readonly Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(work),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
