/**
 * npm run bench [-- <filter>…] [--quick] [--runs=N] [--json=FILE] [--strict] [--list]
 *
 * A filter is a scenario name or tag (`memory`), or `scenario:text` to keep only that scenario's rows whose
 * name contains `text` (the baseline always stays), e.g. `memory:@Locked`. Several filters: any may match.
 *
 * Environment (a flag overrides its variable; filters from both add up):
 *   BENCH_FILTER=memory,redis   same as filters on the command line
 *   BENCH_QUICK=1               each scenario briefly: a smoke check that every row still runs, not figures
 *   BENCH_RUNS, BENCH_TIME_MS, BENCH_WARMUP_MS, BENCH_ITERATIONS   tune the harness
 *   BENCH_JSON=FILE             also write every figure and the machine conditions as JSON
 *   BENCH_STRICT=1              exit 1 when a scenario misses a stated target (off by default: 2 noisy cores)
 */
import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import {
  BenchSkip,
  machineConditions,
  runScenario,
  type HarnessOptions,
  type Scenario,
  type ScenarioInstance,
  type ScenarioResult,
} from './harness';
import { scenarios } from './scenarios';

interface Cli {
  readonly filters: string[];
  readonly quick: boolean;
  readonly list: boolean;
  readonly strict: boolean;
  readonly runs: number | undefined;
  readonly json: string | undefined;
}

function truthy(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number, got "${value}".`);
  return n;
}

function parseCli(argv: readonly string[], env: NodeJS.ProcessEnv): Cli {
  const filters = (env.BENCH_FILTER ?? '').split(/[,\s]+/).filter(Boolean);
  let quick = truthy(env.BENCH_QUICK);
  let list = false;
  let strict = truthy(env.BENCH_STRICT);
  let runs = positiveInt('BENCH_RUNS', env.BENCH_RUNS);
  let json = env.BENCH_JSON || undefined;
  for (const arg of argv) {
    if (arg === '--quick') quick = true;
    else if (arg === '--list') list = true;
    else if (arg === '--strict') strict = true;
    else if (arg.startsWith('--runs=')) runs = positiveInt('--runs', arg.slice('--runs='.length));
    else if (arg.startsWith('--json=')) json = arg.slice('--json='.length);
    else if (arg.startsWith('--'))
      throw new Error(`Unknown option ${arg}. See the comment at the top of test/bench/run.ts.`);
    else filters.push(arg);
  }
  return { filters, quick, list, strict, runs, json };
}

function harnessOptions(cli: Cli, env: NodeJS.ProcessEnv): HarnessOptions {
  const quick = cli.quick;
  const caseFilters = cli.filters
    .filter((f) => f.includes(':'))
    .map((f) => {
      const at = f.indexOf(':');
      return { scenario: f.slice(0, at).toLowerCase(), text: f.slice(at + 1).toLowerCase() };
    });
  const iterations = positiveInt('BENCH_ITERATIONS', env.BENCH_ITERATIONS);

  return {
    judgeTargets: !quick,
    runs: cli.runs ?? (quick ? 3 : 30),
    runTimeMs: positiveInt('BENCH_TIME_MS', env.BENCH_TIME_MS) ?? (quick ? 10 : 40),
    warmupMs: positiveInt('BENCH_WARMUP_MS', env.BENCH_WARMUP_MS) ?? (quick ? 30 : 250),
    ...(iterations === undefined ? {} : { iterations }),
    ...(caseFilters.length === 0
      ? {}
      : {
          caseFilter: (scenario: string, caseName: string) => {
            const mine = caseFilters.filter((f) => f.scenario === scenario.toLowerCase());
            return mine.length === 0 || mine.some((f) => caseName.toLowerCase().includes(f.text));
          },
        }),
  };
}

function selected(scenario: Scenario, filters: readonly string[]): boolean {
  if (filters.length === 0) return true;
  const names = [scenario.name, ...(scenario.tags ?? [])].map((n) => n.toLowerCase());
  return filters.some((filter) => {
    const wanted = (filter.includes(':') ? filter.slice(0, filter.indexOf(':')) : filter).toLowerCase();
    return names.includes(wanted) || scenario.name.toLowerCase().includes(wanted);
  });
}

async function main(): Promise<number> {
  const cli = parseCli(process.argv.slice(2), process.env);
  if (cli.list) {
    for (const s of scenarios)
      console.log(`${s.name.padEnd(16)} ${s.title}${s.tags?.length ? `  [${s.tags.join(', ')}]` : ''}`);
    return 0;
  }
  const chosen = scenarios.filter((s) => selected(s, cli.filters));
  if (chosen.length === 0) {
    console.error(
      `No scenario matches ${cli.filters.join(' ')}. Scenarios: ${scenarios.map((s) => s.name).join(', ')}.`,
    );
    return 2;
  }
  const options = harnessOptions(cli, process.env);
  const conditions = machineConditions();
  const started = performance.now();
  console.log(
    `# nestjs-distributed-lock benchmarks${cli.quick ? ' (BENCH_QUICK: smoke check, figures not meaningful)' : ''}`,
  );
  for (const [name, value] of Object.entries(conditions)) console.log(`${name.padEnd(14)} ${value}`);
  console.log(
    `${'harness'.padEnd(14)} ${options.runs} runs × ${options.iterations ?? `~${options.runTimeMs} ms`} per case, ` +
      `warm-up ${options.warmupMs} ms, rows interleaved round by round`,
  );

  const results: ScenarioResult[] = [];
  const skipped: { name: string; reason: string }[] = [];
  let failed = 0;
  let missed = 0;
  for (const scenario of chosen) {
    let instance: ScenarioInstance | undefined;
    try {
      instance = await scenario.setup({ quick: cli.quick });
      const result = await runScenario(scenario, instance, options, (line) => console.log(line));
      results.push(result);
      missed += result.summary.filter((s) => s.ok === false).length;
    } catch (error) {
      if (error instanceof BenchSkip) {
        skipped.push({ name: scenario.name, reason: error.message });
        console.log(`\n## ${scenario.name}: skipped — ${error.message}`);
      } else {
        failed++;
        console.error(`\n## ${scenario.name}: FAILED`);
        console.error(error);
      }
    } finally {
      await instance?.dispose().catch((error: unknown) => {
        failed++;
        console.error(`${scenario.name}: dispose failed`, error);
      });
    }
  }

  const seconds = (performance.now() - started) / 1000;
  console.log(
    `\n${results.length} scenario(s) measured, ${skipped.length} skipped, ${failed} failed in ${seconds.toFixed(1)} s; loadavg now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  if (cli.json) {
    const report = {
      at: new Date().toISOString(),
      quick: cli.quick,
      conditions,
      options: { ...options, caseFilter: undefined },
      results,
      skipped,
    };
    writeFileSync(cli.json, JSON.stringify(report, null, 2));
    console.log(`wrote ${cli.json}`);
  }
  if (failed > 0) return 1;
  if (cli.strict && missed > 0) {
    console.error(`${missed} target(s) missed (BENCH_STRICT).`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 2;
  },
);
