import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy between a client and a server that a test can make misbehave without touching the server:
 * `hold()` stops every byte both ways on open connections (a cable pulled or a frozen peer, no RST: the client's
 * socket stays "connected"), `holdReplies()` lets requests through but stops the replies, `pass()` lets bytes
 * through again, `cut()` drops every connection, `refuse()` makes new connections fail at once.
 */
export class TcpLink {
  private readonly server: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  private holding = false;
  private refusing = false;

  private constructor(host: string, port: number) {
    this.server = createServer((inbound) => {
      if (this.refusing) return void inbound.destroy();
      const outbound = connect(port, host);
      const pair: [Socket, Socket] = [inbound, outbound];
      this.pairs.add(pair);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      if (this.holding) for (const socket of pair) socket.pause();
      const drop = (): void => {
        this.pairs.delete(pair);
        inbound.destroy();
        outbound.destroy();
      };
      inbound.on('close', drop).on('error', drop);
      outbound.on('close', drop).on('error', drop);
    });
  }

  /** A link to `port` on 127.0.0.1, or to `host:port`. */
  static async open(target: number | string): Promise<TcpLink> {
    const [host, port] = typeof target === 'number' ? ['127.0.0.1', target] : splitTarget(target);
    const link = new TcpLink(host, port);
    await new Promise<void>((resolve) => link.server.listen(0, '127.0.0.1', resolve));
    return link;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** `127.0.0.1:port`, for clients that take a connection string. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  hold(): void {
    this.holding = true;
    for (const pair of this.pairs) for (const socket of pair) socket.pause();
  }

  /** Requests still reach the server, its replies stop (on the connections open now). */
  holdReplies(): void {
    for (const [, outbound] of this.pairs) outbound.pause();
  }

  pass(): void {
    this.holding = false;
    this.refusing = false;
    for (const pair of this.pairs) for (const socket of pair) socket.resume();
  }

  cut(): void {
    // destroy(), not resetAndDestroy(): on a paused socket Node 20 then leaves a handle that spins the event loop.
    for (const [inbound, outbound] of [...this.pairs]) {
      inbound.destroy();
      outbound.destroy();
    }
  }

  refuse(): void {
    this.refusing = true;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function splitTarget(target: string): [string, number] {
  const colon = target.lastIndexOf(':');
  return [target.slice(0, colon), Number(target.slice(colon + 1))];
}
