import { setMaxListeners } from 'node:events';

/**
 * An AbortController that ends with its component (closed backend). Every call in flight listens to its signal,
 * so fifty contenders are fifty listeners: not a leak, hence no listener limit.
 */
export function lifetimeController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}
