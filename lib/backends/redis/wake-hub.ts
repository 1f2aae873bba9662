import { randomUUID } from 'node:crypto';
import type { RedlockClient } from './options';
import { closeClient, type RedisNode } from './redis-node';

/** How long a channel nobody listens to stays subscribed: a hot key's waiters come back within ms. */
const LINGER_MS = 5_000;
/** Release announcements remembered per channel, so a wait can see what arrived since its last attempt. */
const REMEMBERED = 32;
/** Announcements on the hub's own channel remembered whatever key they are about (see sinceOwn). */
const OWN_REMEMBERED = 64;

type Listener = (target: string) => void;

class Channel {
  readonly listeners = new Set<Listener>();
  /** Messages seen since subscribing; recent[seq % REMEMBERED] is the target of message number seq. */
  seq = 0;
  readonly recent = new Array<string>(REMEMBERED);
  subscribed = false;
  ready: Promise<boolean> | undefined;
  linger: NodeJS.Timeout | undefined;
}

/** Where a channel stood when an attempt was sent: messages after it may concern the attempt's owner. */
export interface WakeMark {
  /** Undefined while the key's channel is not subscribed: only the own channel's messages can be told then. */
  readonly channel: Channel | undefined;
  readonly epoch: number;
  readonly seq: number;
  /** The hub's count of own-channel messages at the mark. */
  readonly ownSeq: number;
}

/**
 * The release announcements of one node, on a connection of their own (a subscribed connection can run no
 * other command). Channels are subscribed on first use and kept while waiters come and go, so that on a
 * contended key a wait costs no Redis command at all: the last attempt's mark tells what was announced since.
 *
 * Besides the keys' channels, the hub listens on a channel of its own (`own`), which its waiters leave in the
 * line with their place: the scripts tell a waiter its turn there, as "<key channel> NUL <target>", and the hub
 * hands it on as if it came on the key's channel. So a release wakes the process whose turn it is, not every
 * process with a waiter on the key (16 processes on one hot key: 2 messages per lock instead of 32).
 */
export class WakeHub {
  /** This hub's own channel: unique per hub, so no other process hears what is meant for its waiters. */
  readonly own = `nestjs-distributed-lock\u0000wake\u0000${randomUUID()}`;
  private ownSubscribed = false;
  /** Settles when the current connection's own channel is subscribed, or could not be. */
  private ownReady: Promise<void> = Promise.resolve();
  private subscriber: RedlockClient | undefined;
  private readonly channels = new Map<string, Channel>();
  /** Own-channel messages received, and the last OWN_REMEMBERED of them, whatever key they are about. */
  private ownSeq = 0;
  private readonly ownRecent = new Array<{ readonly channel: string; readonly target: string }>(OWN_REMEMBERED);
  /** Bumped whenever the subscription connection drops: announcements may have been missed. */
  private epoch = 0;
  private closed = false;

  constructor(private readonly node: RedisNode) {
    node.client.on('end', this.onClientEnd);
  }

  /**
   * Opens the subscription connection ahead of the first wait (init); settles once the own channel is subscribed
   * or could not be (failures are left to the first wait). Until then a waiter's turn told there would be lost.
   */
  start(): Promise<void> {
    return this.connection() ? this.ownReady : Promise.resolve();
  }

  /** Where `channel` stands now, if it is subscribed; undefined if announcements could not be told apart. */
  mark(channel: string): WakeMark | undefined {
    // A Cluster replaces a dropped subscription connection (to any of its nodes) without telling: the epoch
    // cannot follow it, so announcements missed meanwhile could not be told apart. Its waits ask the nodes.
    if (this.node.cluster) return undefined;
    if (!this.ownSubscribed || this.subscriber?.status !== 'ready') return undefined;
    const state = this.channels.get(channel);
    const subscribed = state?.subscribed === true ? state : undefined;
    return { channel: subscribed, epoch: this.epoch, seq: subscribed?.seq ?? 0, ownSeq: this.ownSeq };
  }

  /** Targets announced on the mark's channel since the mark, or undefined if that cannot be known. */
  since(name: string, mark: WakeMark): readonly string[] | undefined {
    const state = this.channels.get(name);
    if (!state || state !== mark.channel || !state.subscribed || !this.ownSubscribed || mark.epoch !== this.epoch) {
      return undefined;
    }
    const count = state.seq - mark.seq;
    if (count > REMEMBERED) return undefined;
    const targets: string[] = [];
    for (let seq = mark.seq + 1; seq <= state.seq; seq++) targets.push(state.recent[seq % REMEMBERED]!);
    return targets;
  }

  /**
   * Targets told to this hub's waiters about `name` on the own channel since the mark, or undefined if that
   * cannot be known. The own channel is subscribed for good, so this holds also before the first wait on a key
   * has subscribed its channel: a turn (or a key handed over) told in between is not lost. Announcements to
   * everyone come on the key's channel only: a wait that gets its targets from here must still ask the nodes.
   */
  sinceOwn(name: string, mark: WakeMark): readonly string[] | undefined {
    if (!this.ownSubscribed || mark.epoch !== this.epoch || this.ownSeq - mark.ownSeq > OWN_REMEMBERED) {
      return undefined;
    }
    const targets: string[] = [];
    for (let seq = mark.ownSeq + 1; seq <= this.ownSeq; seq++) {
      const told = this.ownRecent[seq % OWN_REMEMBERED]!;
      if (told.channel === name) targets.push(told.target);
    }
    return targets;
  }

  /**
   * Calls `listener` with the target of every announcement on `channel` until stopped. `ready` resolves true
   * once the subscription is confirmed (false if it could not be made: the caller then relies on its timeout).
   */
  listen(name: string, listener: Listener): { readonly ready: Promise<boolean>; stop(): void } {
    const state = this.channel(name);
    state.listeners.add(listener);
    if (state.linger) {
      clearTimeout(state.linger);
      state.linger = undefined;
    }
    return {
      ready: state.ready ?? Promise.resolve(false),
      stop: () => {
        state.listeners.delete(listener);
        if (state.listeners.size === 0 && !this.closed) {
          state.linger = setTimeout(() => this.unsubscribe(name, state), LINGER_MS);
          state.linger.unref();
        }
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.node.client.off('end', this.onClientEnd);
    for (const state of this.channels.values()) {
      if (state.linger) clearTimeout(state.linger);
      for (const listener of [...state.listeners]) listener('');
    }
    this.channels.clear();
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (subscriber) await closeClient(subscriber);
  }

  /**
   * The node's client ended for good (its owner closed it): the subscription connection made from it goes too —
   * nobody else would close it, and it would keep the process alive after the user closed every client. Waiters
   * are woken to find the node gone; a wait after the user connects the client again opens a new one.
   */
  private readonly onClientEnd = (): void => {
    const subscriber = this.subscriber;
    if (!subscriber) return;
    this.subscriber = undefined;
    this.ownSubscribed = false;
    this.epoch++;
    const channels = [...this.channels.values()];
    this.channels.clear();
    for (const state of channels) {
      if (state.linger) clearTimeout(state.linger);
      for (const listener of [...state.listeners]) listener('');
    }
    void closeClient(subscriber);
  };

  private channel(name: string): Channel {
    let state = this.channels.get(name);
    if (state) return state;
    state = new Channel();
    this.channels.set(name, state);
    const subscriber = this.connection();
    const current = state;
    current.ready = subscriber
      ? whenReady(subscriber)
          .then(() => subscriber.subscribe(name))
          .then(
            () => {
              current.subscribed = this.channels.get(name) === current;
              return current.subscribed;
            },
            () => {
              if (this.channels.get(name) === current) this.channels.delete(name);
              return false;
            },
          )
      : Promise.resolve(false);
    return state;
  }

  private unsubscribe(name: string, state: Channel): void {
    if (this.channels.get(name) !== state || state.listeners.size > 0) return;
    this.channels.delete(name);
    state.subscribed = false;
    this.subscriber?.unsubscribe(name).catch(() => undefined);
  }

  private connection(): RedlockClient | undefined {
    if (this.closed) return undefined;
    if (this.subscriber) return this.subscriber;
    // Its owner closed the client: no connection of ours may outlive it (waits fall back on their timeouts).
    if (this.node.client.status === 'end') return undefined;
    const subscriber = this.node.client.duplicate();
    let connectedBefore = false;
    subscriber.on('error', () => undefined);
    subscriber.on('close', () => {
      this.epoch++;
      if (this.subscriber === subscriber) this.ownSubscribed = false;
    });
    subscriber.on('ready', () => {
      if (connectedBefore) this.resubscribe(subscriber);
      connectedBefore = true;
    });
    subscriber.on('message', (channel: string, message: string) => this.receive(channel, message));
    this.subscriber = subscriber;
    this.ownReady = this.subscribeOwn(subscriber);
    return subscriber;
  }

  /** Subscribes the hub's own channel once the connection is ready; ownSubscribed says when it is. */
  private subscribeOwn(subscriber: RedlockClient): Promise<void> {
    return whenReady(subscriber)
      .then(() => subscriber.subscribe(this.own))
      .then(
        () => {
          if (this.subscriber === subscriber && subscriber.status === 'ready') this.ownSubscribed = true;
        },
        // Not subscribed: marks stay unusable, so every wait asks the nodes (and waiters fall back on timeouts).
        () => undefined,
      );
  }

  /**
   * The subscription connection is back after a drop: whatever was announced while it was down is lost, and
   * ioredis resubscribes only when the client was made with autoResubscribe (the default). So every channel is
   * subscribed again here, and once that is confirmed every waiter is woken to ask the nodes afresh — a release
   * announced meanwhile would otherwise leave its waiter asleep until its polling pause ends.
   */
  private resubscribe(subscriber: RedlockClient): void {
    const names = [...this.channels.keys()];
    // The own channel apart: a user whose ACL grants only its own prefix of channels is refused it, and one
    // SUBSCRIBE naming it would be refused as a whole (the scripts then tell its waiters on the keys' channels).
    subscriber.subscribe(this.own).then(
      () => {
        if (this.subscriber === subscriber && subscriber.status === 'ready') this.ownSubscribed = true;
      },
      () => undefined,
    );
    (names.length > 0 ? subscriber.subscribe(...names) : Promise.resolve()).then(
      () => {
        if (this.subscriber !== subscriber) return;
        // Marks taken before the subscriptions were back say nothing about what was announced meanwhile.
        this.epoch++;
        for (const name of names) {
          const state = this.channels.get(name);
          if (!state) continue;
          state.subscribed = true;
          for (const listener of [...state.listeners]) listener('');
        }
      },
      // Dropped again: the next 'ready' tries again; the waits' own timeouts cover the meantime.
      () => undefined,
    );
  }

  /** A message on a key's channel, or on the hub's own channel for one of its waiters (see `own`). */
  private receive(channel: string, message: string): void {
    if (channel !== this.own) return this.deliver(channel, message);
    // The key channel has a NUL of its own (key-names.ts); targets (owner tokens) have none.
    const split = message.lastIndexOf('\u0000');
    if (split <= 0) return;
    const told = { channel: message.slice(0, split), target: message.slice(split + 1) };
    this.ownSeq++;
    this.ownRecent[this.ownSeq % OWN_REMEMBERED] = told;
    this.deliver(told.channel, told.target);
  }

  private deliver(name: string, target: string): void {
    const state = this.channels.get(name);
    if (!state) return;
    state.seq++;
    state.recent[state.seq % REMEMBERED] = target;
    for (const listener of [...state.listeners]) listener(target);
  }
}

/**
 * A SUBSCRIBE sent while ioredis still runs its ready check (INFO) puts the connection in subscriber mode under
 * the check, which then fails and drops the connection along with the subscription: subscribe once ready.
 */
function whenReady(client: RedlockClient): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onReady = (): void => {
      client.off('end', onEnd);
      resolve();
    };
    const onEnd = (): void => {
      client.off('ready', onReady);
      reject(new Error('subscription connection closed'));
    };
    client.once('ready', onReady);
    client.once('end', onEnd);
  });
}
