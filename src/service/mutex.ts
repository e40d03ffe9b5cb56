/** A FIFO async mutex with bounded waiting. */
import { SlotSyncError } from '../errors.js';

export class Mutex {
  #locked = false;
  readonly #waiters: Array<() => void> = [];

  get locked(): boolean {
    return this.#locked;
  }

  /** Resolves with a release function, or rejects with `onTimeout()` after `timeoutMs`. */
  acquire(timeoutMs = Number.POSITIVE_INFINITY, onTimeout?: () => Error): Promise<() => void> {
    if (!this.#locked) {
      this.#locked = true;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const grant = () => {
        if (timer) clearTimeout(timer);
        resolve(this.#releaser());
      };
      this.#waiters.push(grant);
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          const index = this.#waiters.indexOf(grant);
          if (index >= 0) this.#waiters.splice(index, 1);
          reject(
            onTimeout
              ? onTimeout()
              : new SlotSyncError('SLOTSYNC_LOCK_TIMEOUT', 'timed out waiting for the lock'),
          );
        }, timeoutMs);
      }
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      if (next) next();
      else this.#locked = false;
    };
  }
}
