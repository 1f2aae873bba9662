#!/usr/bin/env bash
# Installs the package the way a user would — from the npm tarball, with only the required peers — and checks
# that it loads from plain CommonJS, takes a lock, ships its types, and pulls in none of the optional backends'
# drivers. Catches what tests against lib/ cannot: a wrong "files"/"exports"/"main", a missing .d.ts, or a
# driver imported at the top level that would force every user to install it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nestjs-distributed-lock-pack.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

fail() { echo "FAIL pack-install: $*" >&2; exit 1; }
devVersion() { node -p "require('$ROOT/package.json').devDependencies['$1'] || ''"; }

cd "$ROOT"
echo "--- build"
npm run --silent build

echo "--- pack"
mkdir "$WORK/pack"
TARBALL="$WORK/pack/$(npm pack --silent --pack-destination "$WORK/pack" | tail -n 1)"
[[ -f "$TARBALL" ]] || fail "npm pack did not produce a tarball"
CONTENTS="$(tar -tzf "$TARBALL")"
REQUIRED=(package/package.json package/dist/index.js package/dist/index.d.ts)
[[ -f README.md ]] && REQUIRED+=(package/README.md)
for required in "${REQUIRED[@]}"; do
  grep -qx "$required" <<<"$CONTENTS" || fail "$required is missing from the tarball"
done
# Only compiled output and docs are published: no sources, tests, sample, maps or build configs.
if unpublished="$(grep -E '^package/(lib|test|sample|dist-[^/]*|node_modules)/|\.map$|\.spec\.|tsconfig' <<<"$CONTENTS")"; then
  fail "the tarball contains files that should not be published:"$'\n'"$unpublished"
fi
echo "tarball: $(basename "$TARBALL"), $(wc -l <<<"$CONTENTS") files"

# The peer range is "^11 || ^12": check the newest of each (12 is ESM-only, 11 is CommonJS).
NEST_VERSIONS=("$(devVersion @nestjs/core)" "${NEST11_VERSION:-11.2.10}")
check_against_nest() {
local NEST="$1"
echo "--- install into an empty app (Nest $NEST)"
APP="$WORK/app-$NEST"
mkdir "$APP"
cat >"$APP/package.json" <<'JSON'
{ "name": "pack-install-check", "version": "0.0.0", "private": true }
JSON
DEPS=("$TARBALL")
DEPS+=("@nestjs/common@$NEST" "@nestjs/core@$NEST")
for peer in reflect-metadata rxjs; do
  version="$(devVersion "$peer")"
  [[ -n "$version" ]] || fail "$peer is not in the repo's devDependencies; cannot pick its version"
  DEPS+=("$peer@$version")
done
(cd "$APP" && npm install --no-audit --no-fund --prefer-offline --loglevel=error "${DEPS[@]}")

# Backend drivers are optional peers: a user of the memory backend must not get (or need) any of them.
for driver in ioredis typeorm node-zookeeper-client pg mysql2 better-sqlite3; do
  found="$(find "$APP/node_modules" -type d -path "*/node_modules/$driver" -prune -print | head -n 1)"
  [[ -z "$found" ]] || fail "$driver was installed (${found#"$APP/"}); it must stay an optional peer dependency"
done

echo "--- use it from CommonJS"
cat >"$APP/check.cjs" <<'JS'
'use strict';
// Plain JavaScript, as a user without TypeScript decorators would write it.
require('reflect-metadata');
const assert = require('node:assert/strict');
const { Injectable, Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { DistributedLockModule, LockContext, LockService, Locked, MemoryLockBackend } = require('nestjs-distributed-lock');

class Billing {
  async charge(invoiceId) {
    return LockContext.current().fencingToken;
  }
}
// What `@Locked('invoice:{0}')` and `@Injectable()` compile to.
Object.defineProperty(
  Billing.prototype,
  'charge',
  Reflect.decorate([Locked('invoice:{0}')], Billing.prototype, 'charge', Object.getOwnPropertyDescriptor(Billing.prototype, 'charge')),
);
Reflect.decorate([Injectable()], Billing);

class AppModule {}
Reflect.decorate(
  [Module({ imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() }, keyPrefix: 'pack:' })], providers: [Billing] })],
  AppModule,
);

async function main() {
  const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
  const locks = app.get(LockService);

  const first = await app.get(Billing).charge(7);
  assert.equal(typeof first, 'bigint', '@Locked method: fencing token is a bigint');

  const second = await locks.using('invoice:7', async (lock) => {
    assert.equal(await locks.isLocked('invoice:7'), true, 'the key is held inside using()');
    // reentrant: false, or this call chain, which holds the key, would simply be given it again.
    assert.equal(await locks.tryAcquire('invoice:7', { reentrant: false }), null, 'a second owner cannot take the held key');
    return lock.fencingToken;
  });
  assert.equal(typeof second, 'bigint', 'using(): fencing token is a bigint');
  assert.ok(second > first, `fencing tokens increase (${first} then ${second})`);
  assert.equal(await locks.isLocked('invoice:7'), false, 'using() released the key');

  await app.close();
  console.log(`locked and released invoice:7 with fencing tokens ${first} < ${second}`);
}

// A hang (a lock never granted, a handle kept open) must fail the check, not stall CI.
const watchdog = setTimeout(() => {
  console.error('check.cjs timed out');
  process.exit(1);
}, 20_000);
watchdog.unref();
main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
JS
(cd "$APP" && node check.cjs) || fail "check.cjs failed"

echo "--- store subpaths: shipped, and loading one without its client names the client"
declare -A STORE_CLIENT=([redis]=ioredis [typeorm]=typeorm [zookeeper]=node-zookeeper-client)
for store in "${!STORE_CLIENT[@]}"; do
  [[ -d "$ROOT/lib/backends/$store" ]] || continue
  for file in index.js index.d.ts; do
    grep -qx "package/dist/backends/$store/$file" <<<"$CONTENTS" || fail "dist/backends/$store/$file is missing from the tarball"
  done
  client="${STORE_CLIENT[$store]}"
  (cd "$APP" && node -e '
    const [subpath, client] = process.argv.slice(1);
    try { require(subpath); } catch (error) {
      if (error.code === "MODULE_NOT_FOUND" && error.message.includes(client)) process.exit(0);
      console.error(error); process.exit(1);
    }
    console.error(`${subpath} loaded without ${client} installed`); process.exit(1);' \
    "nestjs-distributed-lock/$store" "$client") || fail "nestjs-distributed-lock/$store without $client"
done

echo "--- types resolve for a TypeScript user"
cat >"$APP/check.ts" <<'TS'
import { DistributedLockModule, LockService, Locked, MemoryLockBackend, type Lock, type LockedOptions } from 'nestjs-distributed-lock';

const options: LockedOptions = { ttl: 1_000, waitTimeout: 0, onLocked: 'skip' };
export const decorate: MethodDecorator = Locked('order:{0}', options);
export const token = (lock: Lock): bigint => lock.fencingToken;
export const module = DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } });
export const using = (locks: LockService): Promise<number> => locks.using('k', async () => 1);
TS
# skipLibCheck off, so the shipped .d.ts files must compile too. Two consumer setups: nodenext resolves through
# "exports" (its "types" condition); commonjs + node10 is the classic Nest CLI tsconfig and reads "types".
# (module node16 cannot work with Nest 12 at all: it does not model require(esm) of the ESM-only @nestjs/*.)
# @types/node, which @nestjs/common's own types need, is borrowed from the repo rather than installed.
TSC=("$ROOT/node_modules/.bin/tsc" --noEmit --strict --target ES2022 --experimentalDecorators --skipLibCheck false
  --typeRoots "$ROOT/node_modules/@types" --types node)
(cd "$APP" && "${TSC[@]}" --module nodenext --moduleResolution nodenext check.ts) ||
  fail "check.ts does not type-check against the published types (module nodenext)"
if (( "$(node -p "require('$ROOT/node_modules/typescript/package.json').version.split('.')[0]")" < 7 )); then
  # TypeScript 7 removed node10; until then it is what most existing Nest apps use.
  (cd "$APP" && "${TSC[@]}" --module commonjs --moduleResolution node10 --ignoreDeprecations 6.0 check.ts) ||
    fail "check.ts does not type-check against the published types (module commonjs, moduleResolution node10)"
fi

}

for NEST in "${NEST_VERSIONS[@]}"; do check_against_nest "$NEST"; done

echo "PASS pack-install: $(basename "$TARBALL") installs with only its required peers (Nest ${NEST_VERSIONS[*]}), loads from CommonJS, locks, and ships its types"
