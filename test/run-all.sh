#!/usr/bin/env bash
# The one test command (`bash test/run-all.sh`, also `npm test` and .ci/run). Works on a fresh clone: installs
# dependencies when they are missing or do not match package-lock.json, then runs every check in order and
# stops at the first failure with its exit code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECTION=0
SECTION_NAME=""
SECTIONS=8
STARTED_AT=$SECONDS
if [[ -t 1 ]]; then BOLD=$'\033[1m' RED=$'\033[1;31m' GREEN=$'\033[1;32m' RESET=$'\033[0m'; else BOLD="" RED="" GREEN="" RESET=""; fi
section() {
  SECTION=$((SECTION + 1))
  SECTION_NAME="$1"
  printf '\n%s==> [%d/%d] %s%s\n' "$BOLD" "$SECTION" "$SECTIONS" "$1" "$RESET"
}

# --- services ---------------------------------------------------------------------------------------------
# Integration tests talk to real servers. Each test/services/<name>.sh registers one (see test/services/lib.sh):
# start_services starts them all on free loopback ports and exports where they listen; stop_services runs
# however this script ends: success, failure or Ctrl-C.
source test/services/lib.sh
for service_script in test/services/*.sh; do
  [[ $(basename "$service_script") == lib.sh ]] || source "$service_script"
done
STARTED_SERVICES=()
start_services() {
  local name
  for name in "${REGISTERED_SERVICES[@]}"; do
    STARTED_SERVICES+=("$name")
    "start_$name"
  done
}
stop_services() {
  local name status=0
  for name in "${STARTED_SERVICES[@]}"; do "stop_$name" || status=1; done
  STARTED_SERVICES=()
  return "$status"
}
finish() {
  local rc=$?
  stop_services || echo "warning: stopping test services failed" >&2
  if ((rc != 0)); then
    printf '\n%sFAILED: [%d/%d] %s (exit %d)%s\n' "$RED" "$SECTION" "$SECTIONS" "$SECTION_NAME" "$rc" "$RESET" >&2
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. toolchain -----------------------------------------------------------------------------------------
section "toolchain"
node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  // Nest 12 is ESM-only; compiled CommonJS loads it through require(esm), on by default from Node 20.19.
  if (major < 20 || (major === 20 && minor < 19)) {
    console.error(`Node ${process.versions.node} is too old: need >= 20.19 (package.json "engines").`);
    process.exit(1);
  }'
echo "node $(node --version), npm $(npm --version)"

# --- 2. dependencies --------------------------------------------------------------------------------------
section "dependencies"
# node_modules/.package-lock.json is npm's record of what is installed; compare it with package-lock.json
# (and the lockfile with package.json) so a pull that changed dependencies triggers a clean install.
# Prints why and fails when they differ; any error while comparing counts as a difference too.
deps_in_sync() {
  [[ -f node_modules/.package-lock.json ]] || { echo "node_modules is missing or was not installed by npm"; return 1; }
  node -e '
    const fs = require("node:fs");
    const read = (file) => JSON.parse(fs.readFileSync(file, "utf8"));
    const manifest = read("package.json");
    const lock = read("package-lock.json").packages;
    const installed = read("node_modules/.package-lock.json").packages;
    const problems = [];
    for (const field of ["dependencies", "devDependencies", "peerDependencies", "optionalDependencies"]) {
      // Compared as sets of name@range: npm writes some of these maps in its own order (peers sorted).
      const entries = (map) => Object.entries(map ?? {}).map(([name, range]) => `${name}@${range}`).sort().join("\n");
      if (entries(manifest[field]) !== entries(lock[""][field])) {
        problems.push(`package-lock.json does not match package.json ${field} (run npm install and commit the lockfile)`);
      }
    }
    for (const [path, entry] of Object.entries(lock)) {
      if (!path.startsWith("node_modules/")) continue;
      const got = installed[path];
      // Optional packages for other platforms (e.g. @swc/core-darwin-arm64) are rightly absent.
      if (!got) { if (!entry.optional) problems.push(`${path} is not installed`); }
      else if (got.version !== entry.version) problems.push(`${path} is ${got.version}, the lockfile says ${entry.version}`);
    }
    for (const path of Object.keys(installed)) if (!(path in lock)) problems.push(`${path} is not in the lockfile`);
    if (problems.length > 0) {
      console.log(problems.slice(0, 5).join("\n") + (problems.length > 5 ? `\n... and ${problems.length - 5} more` : ""));
      process.exit(1);
    }
  ' 2>&1
}
if reason="$(deps_in_sync)"; then
  echo "node_modules matches package-lock.json"
else
  echo "$reason"
  echo "running npm ci"
  npm ci --no-audit --no-fund
fi

section "test services (test/services/)"
start_services
echo "started: ${STARTED_SERVICES[*]:-none}"

# --- 3. types ---------------------------------------------------------------------------------------------
section "typecheck (lib, test, sample)"
npm run --silent typecheck
echo "ok"

# --- 4. lint ----------------------------------------------------------------------------------------------
section "lint"
npm run --silent lint
echo "ok"

# --- 5. tests ---------------------------------------------------------------------------------------------
section "jest (unit, contract, nest, e2e)"
JEST_SUMMARY="$(mktemp)"
npx jest --ci --json --outputFile="$JEST_SUMMARY"
JEST_COUNTS="$(node -e '
  const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$JEST_SUMMARY")"
rm -f "$JEST_SUMMARY"

# --- 6. the published package -----------------------------------------------------------------------------
section "package: pack, install in an empty app, use"
bash test/package/pack-install.sh

# --- 7. benchmarks, briefly ------------------------------------------------------------------------------
section "benchmark smoke (BENCH_QUICK=1: runs every scenario briefly, judges no timing)"
BENCH_QUICK=1 npm run --silent bench

printf '\n%sALL CHECKS PASSED%s in %ds\n' "$GREEN" "$RESET" "$((SECONDS - STARTED_AT))"
# The plain closing line CI reads: the jest counts (the package and benchmark checks passed, or we'd not be here).
echo "tests: $JEST_COUNTS"
