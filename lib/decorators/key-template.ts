import { LockConfigurationError } from '../core/errors';
import { messages } from '../core/messages';

/** A key builder: called with the method's arguments, returns one key or several. */
// `never[]` lets any parameter list through, so `(id: string) => ...` type-checks without `any`.
export type LockKeyFunction = (...args: never[]) => string | readonly string[];

/**
 * The key of a @Locked method: a template whose `{n}` / `{n.path}` placeholders read argument n
 * (`'order:{0}'`, `'user:{0.id}:{1}'`; `{{` and `}}` are literal braces), a function of the arguments,
 * or an array of them for several keys.
 */
export type LockKey = string | LockKeyFunction | readonly (string | LockKeyFunction)[];

/** Builds the key list for one call; throws LockConfigurationError for values that cannot make a key. */
export type KeyResolver = ((args: readonly unknown[]) => string[]) & {
  /** Set when no part depends on the arguments: the keys can be prepared once, at bootstrap. */
  readonly constant?: readonly string[];
};

interface Placeholder {
  readonly source: string;
  readonly index: number;
  readonly path: readonly string[];
}

type Part = string | Placeholder;

const PLACEHOLDER = /^(\d+)((?:\.[A-Za-z_$][\w$]*|\.\d+)*)$/;

/** Parses and checks every part of the key at decoration time; the result only reads arguments. */
export function compileLockKey(key: unknown, where: string, parameterCount: number): KeyResolver {
  const items = Array.isArray(key) ? (key as unknown[]) : [key];
  if (items.length === 0) throw new LockConfigurationError('key', messages.decorator.badKey(where));
  const builders = items.map((item) => {
    if (typeof item === 'function') return fromFunction(item as LockKeyFunction, where);
    if (typeof item === 'string' && item.length > 0) return fromTemplate(item, where, parameterCount);
    throw new LockConfigurationError('key', messages.decorator.badKey(where));
  });
  const resolve = (args: readonly unknown[]): string[] => builders.flatMap((build) => build(args));
  const constant = builders.every((b) => b.constant !== undefined) ? builders.flatMap((b) => b.constant!) : undefined;
  return Object.assign(resolve, { constant });
}

type PartBuilder = ((args: readonly unknown[]) => string[]) & { constant?: string[] };

function fromFunction(fn: LockKeyFunction, where: string): PartBuilder {
  return (args) => {
    const result: unknown = (fn as (...a: readonly unknown[]) => unknown)(...args);
    if (typeof result === 'string' && result.length > 0) return [result];
    if (Array.isArray(result) && result.length > 0 && result.every((k) => typeof k === 'string' && k.length > 0))
      return result as string[];
    throw new LockConfigurationError('key', messages.decorator.keyFunctionResult(where, result));
  };
}

function fromTemplate(template: string, where: string, parameterCount: number): PartBuilder {
  const parts = parseTemplate(template, where);
  for (const part of parts) {
    if (typeof part !== 'string' && part.index >= parameterCount) {
      const reason = messages.decorator.placeholderBeyondParams(part.index, parameterCount);
      throw new LockConfigurationError('key', messages.decorator.badTemplate(where, template, reason));
    }
  }
  if (parts.every((p) => typeof p === 'string')) {
    const key = parts.join('');
    return Object.assign(() => [key], { constant: [key] });
  }
  return (args) => {
    let key = '';
    for (const part of parts) key += typeof part === 'string' ? part : render(part, args, where, template);
    return [key];
  };
}

function render(placeholder: Placeholder, args: readonly unknown[], where: string, template: string): string {
  let value: unknown = args[placeholder.index];
  for (const property of placeholder.path) {
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
    if (!match) {
      throw bad(`{${source}} is not a placeholder. Use {n} for argument n or {n.property.path}, e.g. {0} or {0.id}.`);
    }
    if (literal) parts.push(literal);
    literal = '';
    parts.push({ source, index: Number(match[1]), path: match[2] ? match[2].slice(1).split('.') : [] });
    i = end;
  }
  if (literal) parts.push(literal);
  return parts;
}
