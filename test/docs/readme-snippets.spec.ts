import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

const ROOT = join(__dirname, '..', '..');

/**
 * Every ```ts block of the README compiles as written, against the library's own sources under the names a
 * user imports ('nestjs-distributed-lock' and its subpaths, only those package.json exports). A block may be
 * preceded by `<!-- prelude: … -->`: declarations of the user's own code it mentions (a repository, a
 * service), compiled with it but not shown.
 */
interface Snippet {
  readonly line: number;
  readonly code: string;
}

function snippets(markdown: string): Snippet[] {
  const found: Snippet[] = [];
  const fence = /(?:<!-- prelude: ([\s\S]*?)-->\s*\n)?```ts\n([\s\S]*?)```/g;
  for (const match of markdown.matchAll(fence)) {
    const line = markdown.slice(0, match.index).split('\n').length;
    found.push({ line, code: `${match[1] ?? ''}\n${match[2]!}` });
  }
  return found;
}

function exportedPaths(): Record<string, string[]> {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
  const paths: Record<string, string[]> = {};
  for (const subpath of Object.keys(manifest.exports)) {
    if (subpath === './package.json') continue;
    const name = subpath === '.' ? 'nestjs-distributed-lock' : `nestjs-distributed-lock/${subpath.slice(2)}`;
    const source = subpath === '.' ? 'lib/index.ts' : `lib/backends/${subpath.slice(2)}/index.ts`;
    paths[name] = [join(ROOT, source)];
  }
  return paths;
}

describe('README', () => {
  it('has TypeScript snippets, and every one compiles as written', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const blocks = snippets(readme);
    expect(blocks.length).toBeGreaterThan(3);
    const files = new Map(blocks.map((b) => [join(ROOT, 'readme-snippets', `line-${b.line}.ts`), b]));
    const options: ts.CompilerOptions = {
      target: ts.ScriptTarget.ES2022,
      // ES modules: a snippet may use top-level await, as a test file or a script would.
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      strict: true,
      noEmit: true,
      experimentalDecorators: true,
      emitDecoratorMetadata: true,
      esModuleInterop: true,
      skipLibCheck: true,
      types: ['node'],
      baseUrl: ROOT,
      paths: exportedPaths(),
    };
    const host = ts.createCompilerHost(options);
    const readFile = host.readFile.bind(host);
    const fileExists = host.fileExists.bind(host);
    host.readFile = (name) => files.get(name)?.code ?? readFile(name);
    host.fileExists = (name) => files.has(name) || fileExists(name);
    const program = ts.createProgram([...files.keys()], options, host);
    const problems = ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file && files.has(d.file.fileName))
      .map((d) => {
        const block = files.get(d.file!.fileName)!;
        const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
        return `README.md block at line ${block.line} (+${line}): ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
      });
    expect(problems).toEqual([]);
  });
});
