/**
 * A TCP proxy in front of a server, for network faults: `cut()` resets every connection and
 * refuses new ones, `stall()` keeps connections open but passes no byte either way (a
 * dropped network, a firewall eating packets), `restore()` ends the fault.
 */
import { createServer, type Server, Socket } from 'node:net';

type Mode = 'pass' | 'cut' | 'stall';

interface Pair {
  client: Socket;
  server: Socket;
}

export class TcpProxy {
  #mode: Mode = 'pass';
  readonly #pairs = new Set<Pair>();
  readonly #listener: Server;
  port = 0;

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.#listener = createServer((client) => this.#accept(client));
  }

  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetHost, targetPort);
    await new Promise<void>((resolve, reject) => {
      proxy.#listener.once('error', reject);
      proxy.#listener.listen(0, '127.0.0.1', () => resolve());
    });
    const address = proxy.#listener.address();
    if (address && typeof address === 'object') proxy.port = address.port;
    return proxy;
  }

  /** Connections opened through the proxy and still open. */
  get connections(): number {
    return this.#pairs.size;
  }

  #accept(client: Socket): void {
    if (this.#mode === 'cut') {
      client.resetAndDestroy();
      return;
    }
    const server = new Socket();
    const pair: Pair = { client, server };
    this.#pairs.add(pair);
    const close = () => {
      this.#pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on('error', close);
    server.on('error', close);
    client.on('close', close);
    server.on('close', close);
    client.on('data', (chunk) => {
      if (this.#mode === 'pass') server.write(chunk);
    });
    server.on('data', (chunk) => {
      if (this.#mode === 'pass') client.write(chunk);
    });
    server.connect(this.targetPort, this.targetHost);
  }

  /** Resets every open connection and refuses new ones until `restore()`. */
  cut(): void {
    this.#mode = 'cut';
    for (const pair of this.#pairs) {
      pair.client.resetAndDestroy();
      pair.server.destroy();
    }
    this.#pairs.clear();
  }

  /** Accepts connections and keeps them open, but drops every byte until `restore()`. */
  stall(): void {
    this.#mode = 'stall';
  }

  /**
   * Ends the fault. Bytes dropped while stalled are lost, so connections that lived through
   * a stall are reset too (as a real network would once TCP gave up).
   */
  restore(): void {
    if (this.#mode === 'stall') {
      for (const pair of this.#pairs) {
        pair.client.resetAndDestroy();
        pair.server.destroy();
      }
      this.#pairs.clear();
    }
    this.#mode = 'pass';
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#listener.close(() => resolve()));
  }
}
