import type { ExecutionContext } from '@nestjs/common';
import { LockConfigurationError } from '../core/errors';
import { messages } from '../core/messages';

/** A key builder: called with the method's arguments, returns one key or several. */
// `never[]` lets any parameter list through, so `(id: string) => ...` type-checks without `any`.
export type LockKeyFunction = (...args: never[]) => string | readonly string[];

/** A key builder that reads the request (HTTP, RPC or GraphQL) before pipes run: wrap it in requestKey(). */
export type RequestKeyFunction = (context: ExecutionContext) => string | readonly string[];

const REQUEST_KEY = Symbol('nestjs-distributed-lock:request-key');

/** Marks a key function as one of the request's ExecutionContext rather than of the handler's arguments. */
export function requestKey(fn: RequestKeyFunction): LockKeyFunction {
  return Object.assign(fn as unknown as LockKeyFunction, { [REQUEST_KEY]: true });
}

/**
 * The key of a @Locked method: a template whose `{n}` / `{n.path}` placeholders read argument n
 * (`'order:{0}'`, `'user:{0.id}:{1}'`; `{{` and `}}` are literal braces), a function of the arguments,
 * or an array of them for several keys. On request handlers a template may read the request instead —
 * `{params.id}`, `{query.x}`, `{body.x}`, `{headers.x-tenant}`, `{user.id}` (HTTP), `{data.x}` (RPC),
 * `{args.x}` (GraphQL) — or use requestKey((context) => …); the lock is then taken before pipes run.
 */
export type LockKey = string | LockKeyFunction | readonly (string | LockKeyFunction)[];

/** The parts of a request a key template can read; each absent where the transport has none. */
export interface RequestParts {
  readonly params?: unknown;
  readonly query?: unknown;
  readonly body?: unknown;
  readonly headers?: unknown;
  readonly user?: unknown;
  readonly data?: unknown;
  readonly args?: unknown;
  readonly context: ExecutionContext;
}

/** What one call's keys are built from: the method's arguments, or the request for request keys. */
export interface KeySource {
  readonly args: readonly unknown[];
  readonly request?: RequestParts;
}

/** Builds the key list for one call; throws LockConfigurationError for values that cannot make a key. */
export type KeyResolver = ((source: KeySource) => string[]) & {
  /** Set when no part depends on the call: the keys can be prepared once, at bootstrap. */
  readonly constant?: readonly string[];
  /** Some part reads the request: the lock is taken on the request path, before pipes. */
  readonly fromRequest: boolean;
};

interface Placeholder {
  readonly source: string;
  /** An argument index, or the request part the path starts from. */
  readonly from: number | RequestRoot;
  readonly path: readonly string[];
}

type RequestRoot = 'params' | 'query' | 'body' | 'headers' | 'user' | 'data' | 'args';

type Part = string | Placeholder;

/** The `option` of the error for a {user.x} key on a request with no user: a server setup fault, not the client's. */
export const USER_MISSING = 'key.user';

const PLACEHOLDER = /^(\d+)((?:\.[A-Za-z_$][\w$]*|\.\d+)*)$/;
/** Header names have dashes: request paths allow them. */
const REQUEST_PLACEHOLDER = /^(params|query|body|headers|user|data|args)((?:\.[\w$-]+)+)$/;

/** Parses and checks every part of the key at decoration time; the result only reads arguments. */
export function compileLockKey(key: unknown, where: string, parameterCount: number): KeyResolver {
  const items = Array.isArray(key) ? (key as unknown[]) : [key];
  if (items.length === 0) throw new LockConfigurationError('key', messages.decorator.badKey(where));
  const builders = items.map((item) => {
    if (typeof item === 'function') return fromFunction(item as LockKeyFunction, where);
    if (typeof item === 'string' && item.length > 0) return fromTemplate(item, where, parameterCount);
    throw new LockConfigurationError('key', messages.decorator.badKey(where));
  });
  const fromRequest = builders.some((b) => b.fromRequest);
  if (fromRequest && builders.some((b) => b.fromArgs)) {
    throw new LockConfigurationError('key', messages.decorator.mixedKeySources(where));
  }
  const resolve = (source: KeySource): string[] => builders.flatMap((build) => build(source));
  const constant = builders.every((b) => b.constant !== undefined) ? builders.flatMap((b) => b.constant!) : undefined;
  return Object.assign(resolve, { constant, fromRequest });
}

type PartBuilder = ((source: KeySource) => string[]) & {
  constant?: string[];
  fromRequest?: boolean;
  fromArgs?: boolean;
};

function fromFunction(fn: LockKeyFunction, where: string): PartBuilder {
  const ofRequest = REQUEST_KEY in fn;
  const build = (source: KeySource): string[] => {
    if (ofRequest && !source.request) {
      throw new LockConfigurationError('key', messages.decorator.needsRequest(where));
    }
    const result: unknown = ofRequest
      ? (fn as unknown as RequestKeyFunction)(source.request!.context)
      : (fn as (...a: readonly unknown[]) => unknown)(...source.args);
    if (typeof result === 'string' && result.length > 0) return [result];
    if (Array.isArray(result) && result.length > 0 && result.every((k) => typeof k === 'string' && k.length > 0))
      return result as string[];
    throw new LockConfigurationError('key', messages.decorator.keyFunctionResult(where, result));
  };
  return Object.assign(build, { fromRequest: ofRequest, fromArgs: !ofRequest });
}

function fromTemplate(template: string, where: string, parameterCount: number): PartBuilder {
  const parts = parseTemplate(template, where);
  for (const part of parts) {
    if (typeof part !== 'string' && typeof part.from === 'number' && part.from >= parameterCount) {
      const reason = messages.decorator.placeholderBeyondParams(part.from, parameterCount);
      throw new LockConfigurationError('key', messages.decorator.badTemplate(where, template, reason));
    }
  }
  if (parts.every((p) => typeof p === 'string')) {
    const key = parts.join('');
    return Object.assign(() => [key], { constant: [key] });
  }
  const placeholders = parts.filter((p): p is Placeholder => typeof p !== 'string');
  const fromRequest = placeholders.some((p) => typeof p.from === 'string');
  const fromArgs = placeholders.some((p) => typeof p.from === 'number');
  if (fromRequest && fromArgs) throw new LockConfigurationError('key', messages.decorator.mixedKeySources(where));
  const build = (source: KeySource): string[] => {
    if (fromRequest && !source.request) {
      throw new LockConfigurationError('key', messages.decorator.needsRequest(where));
    }
    let key = '';
    for (const part of parts) key += typeof part === 'string' ? part : render(part, source, where, template);
    return [key];
  };
  return Object.assign(build, { fromRequest, fromArgs });
}

function render(placeholder: Placeholder, source: KeySource, where: string, template: string): string {
  let value: unknown =
    typeof placeholder.from === 'number' ? source.args[placeholder.from] : source.request![placeholder.from];
  if (placeholder.from === 'user' && value === undefined) {
    // Not the client's doing: the guard that authenticates ran after the lock, or not at all.
    throw new LockConfigurationError(USER_MISSING, messages.decorator.userMissing(where, template));
  }
  if (placeholder.from === 'headers') {
    // Header names are case-insensitive; Node lower-cases them.
    const [name, ...rest] = placeholder.path;
    value = (value as Record<string, unknown> | undefined)?.[name!.toLowerCase()];
    return finish(placeholder, value, rest, where, template);
  }
  return finish(placeholder, value, placeholder.path, where, template);
}

function finish(
  placeholder: Placeholder,
  start: unknown,
  path: readonly string[],
  where: string,
  template: string,
): string {
  let value = start;
  for (const property of path) {
    value = value === null || value === undefined ? undefined : (value as Record<string, unknown>)[property];
  }
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  throw new LockConfigurationError('key', messages.decorator.unresolved(where, template, placeholder.source, value));
}

function parseTemplate(template: string, where: string): Part[] {
  const parts: Part[] = [];
  let literal = '';
  const bad = (reason: string): LockConfigurationError =>
    new LockConfigurationError('key', messages.decorator.badTemplate(where, template, reason));
  for (let i = 0; i < template.length; i++) {
    const char = template[i]!;
    if (char === '}') {
      if (template[i + 1] !== '}') throw bad(`a lone "}" at position ${i}; write "}}" for a literal brace.`);
      literal += '}';
      i++;
      continue;
    }
    if (char !== '{') {
      literal += char;
      continue;
    }
    if (template[i + 1] === '{') {
      literal += '{';
      i++;
      continue;
    }
    const end = template.indexOf('}', i);
    if (end < 0) throw bad(`the "{" at position ${i} is never closed; write "{{" for a literal brace.`);
    const source = template.slice(i + 1, end);
    const match = PLACEHOLDER.exec(source);
    const request = match ? null : REQUEST_PLACEHOLDER.exec(source);
    if (!match && !request) {
      throw bad(
        `{${source}} is not a placeholder. Use {n} for argument n or {n.property.path}, e.g. {0} or {0.id}; ` +
          `on request handlers {params.x}, {query.x}, {body.x}, {headers.x}, {user.x}, {data.x} or {args.x}.`,
      );
    }
    if (literal) parts.push(literal);
    literal = '';
    if (match) parts.push({ source, from: Number(match[1]), path: match[2] ? match[2].slice(1).split('.') : [] });
    else parts.push({ source, from: request![1] as RequestRoot, path: request![2]!.slice(1).split('.') });
    i = end;
  }
  if (literal) parts.push(literal);
  return parts;
}
