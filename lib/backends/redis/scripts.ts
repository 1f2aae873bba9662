import { createHash } from 'node:crypto';

/**
 * The atomic steps of the Redlock backend, run on each node as Lua (EVALSHA, with EVAL when the node does not
 * know the script yet, e.g. after a restart). Keys reach the scripts only as KEYS[], owners and channels only
 * as ARGV[]: nothing a caller passes is ever spliced into Lua source.
 *
 * Every script works on the same four keys of one lock (see key-names.ts):
 *   KEYS[1] the lock: the owner token as a plain string with a PX expiry (as node-redlock and redis-semaphore
 *           store theirs, so the two exclude each other during a migration)
 *   KEYS[2] the fencing counter (no expiry, never lowered)
 *   KEYS[3] the line of waiters: a sorted set of owners, scored by when each first asked (the client's clock,
 *           the same score on every node, so every node orders the line alike)
 *   KEYS[4] each waiter's deadline (server ms): a place whose owner stops asking lapses at its deadline; and,
 *           under the owner followed by NUL and 'c', the channel of the waiter's wake-up connection; under
 *           the owner followed by NUL and 't', "<ttl> <attempt>" when it takes the key straight from a release
 *           (its ttl, and the number of its attempt that last joined the line)
 *
 * Announcements go to one waiter's own channel (its process's wake-up connection: see wake-hub.ts) as
 * "<key channel> NUL <target>", so a release under contention wakes one process, not every process waiting on
 * the key. A waiter that left no channel (a version before this one, during a rolling upgrade) is told on the
 * key's channel as before, and so is everyone when a key frees with nobody in line.
 */
export interface LuaScript {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
  readonly keys: number;
  /** Changes the lock for the owner in ARGV[1]: one owner's calls on one key must run in the order made. */
  readonly ordered: boolean;
}

const COMMON = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The next fencing token: max(counter + 1, server time in ms × 2048), kept as the new counter.
local function next_token(now)
  local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now * 2048)
  redis.call('SET', KEYS[2], string.format('%.0f', token))
  return token
end
-- The first place in line whose owner is still waiting; lapsed places are dropped on the way.
local function first_in_line(now)
  while true do
    local first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not first then return nil, 0 end
    local due = tonumber(redis.call('HGET', KEYS[4], first) or '0')
    if due > now then return first, due end
    redis.call('ZREM', KEYS[3], first)
    redis.call('HDEL', KEYS[4], first, first .. '\\0c', first .. '\\0t')
  end
end
-- Tells waiter about target on the key's channel: on the waiter's own channel if it left one. A user whose
-- ACL grants only its own prefix of channels (&app:*) may not publish there: a failed PUBLISH would fail the
-- script after its writes, so the waiter is told on the key's channel then, which its process listens to too.
local function tell(waiter, target, key_channel)
  local own = redis.call('HGET', KEYS[4], waiter .. '\\0c')
  if own then
    local sent = redis.pcall('PUBLISH', own, key_channel .. '\\0' .. target)
    if type(sent) ~= 'table' or not sent.err then return end
  end
  redis.call('PUBLISH', key_channel, target)
end
-- Tells the first in line the key is free, and gives it handoff ms to take it before its place lapses. The
-- next two in line hear of the offer too: if the first never comes, they look again once the hand-off is over,
-- and one that then finds the key promised to a dead waiter ahead is told to come back when that offer lapses
-- (the line walks past up to two dead places in a row this way; a longer run waits for the polling pause).
local function offer(first, due, now, handoff, channel)
  local offer_end = now + handoff
  if due > offer_end then
    redis.call('HSET', KEYS[4], first, offer_end)
    due = offer_end
  end
  tell(first, first, channel)
  for _, behind in ipairs(redis.call('ZRANGE', KEYS[3], 1, 2)) do tell(behind, first, channel) end
  return due
end
local function join(owner, arrival, now, place_ttl, own_channel, direct)
  redis.call('ZADD', KEYS[3], 'NX', arrival, owner)
  if own_channel and own_channel ~= '' then
    redis.call('HSET', KEYS[4], owner, now + place_ttl, owner .. '\\0c', own_channel)
    if direct then redis.call('HSET', KEYS[4], owner .. '\\0t', direct) end
  else
    redis.call('HSET', KEYS[4], owner, now + place_ttl)
  end
  redis.call('PEXPIRE', KEYS[3], place_ttl)
  redis.call('PEXPIRE', KEYS[4], place_ttl)
end
-- Takes owner out of the line; true if it had a place.
local function leave(owner)
  if redis.call('ZREM', KEYS[3], owner) == 0 then return false end
  redis.call('HDEL', KEYS[4], owner, owner .. '\\0c', owner .. '\\0t')
  return true
end
-- Hands the free key straight to the first in line, for handoff ms: it confirms with an extension to its ttl
-- (a dead waiter thus holds the line up for handoff ms, not a ttl). It is told '=owner token attempt px': the
-- attempt is the number of its attempt that last joined the line, which the hand-over came after, so the
-- waiter can bound when it happened by its own clock; the next two in line hear of it as of an offer.
local function grant(first, now, direct, handoff, channel)
  local ttl, attempt = string.match(direct, '^(%d+) (%d+)$')
  if not ttl then return false end
  local px = math.min(handoff, tonumber(ttl))
  redis.call('SET', KEYS[1], first, 'PX', px)
  local token = next_token(now)
  tell(first, '=' .. first .. ' ' .. string.format('%.0f', token) .. ' ' .. attempt .. ' ' .. px, channel)
  leave(first)
  for _, behind in ipairs(redis.call('ZRANGE', KEYS[3], 0, 1)) do tell(behind, first, channel) end
  return true
end
`;

/**
 * ARGV: owner, ttl ms, keepPlace ('1'/'0'), arrival score, place ttl ms, hand-off ms, key channel, the owner's
 * own channel ('' for none), and, if the owner takes the key straight from a release (single-node backends),
 * the number of this attempt ('0' if not).
 * Returns {1, fencing token} granted, {0, pttl} held by another, {2, ms} free but promised to the first in line.
 * The first in line taking the key tells the one now first '+owner', so it stops counting the hand-off.
 *
 * The fencing counter becomes max(counter + 1, server time in ms × 2048): the counter makes tokens rise
 * between grants in the same millisecond, the clock floor makes them rise past a node that lost its counter.
 */
const ACQUIRE = `${COMMON}
local owner = ARGV[1]
local now = now_ms()
local direct = ARGV[9] and ARGV[9] ~= '0' and (ARGV[2] .. ' ' .. ARGV[9]) or nil
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= owner then
  if ARGV[3] == '1' then join(owner, ARGV[4], now, tonumber(ARGV[5]), ARGV[8], direct) end
  return {0, redis.call('PTTL', KEYS[1])}
end
if not holder then
  local first, due = first_in_line(now)
  if first and first ~= owner then
    -- Free, but someone waits ahead: no taking it past the line (the releaser coming straight back included).
    if due > now + tonumber(ARGV[6]) then due = offer(first, due, now, tonumber(ARGV[6]), ARGV[7]) end
    if ARGV[3] == '1' then join(owner, ARGV[4], now, tonumber(ARGV[5]), ARGV[8], direct) end
    return {2, due - now}
  end
  if first then
    leave(owner)
    -- The next in line may be counting this owner's hand-off: it came, so it need not look again.
    local now_first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if now_first then tell(now_first, '+' .. owner, ARGV[7]) end
  end
end
redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
return {1, next_token(now)}
`;

/**
 * ARGV: owner, fencing token to raise the counter to ('' to leave it), keepPlace ('1': only give up the vote,
 * as after a failed Redlock round; '0': also withdraw the place in line), hand-off ms, channel.
 * Compare-and-delete: frees the key only for its owner. Then, if the key is free, hands it to the first in line
 * if that waiter takes keys straight from a release, else offers it to them (or tells every listener it is
 * free). Returns 1 if the owner held the key.
 */
const RELEASE = `${COMMON}
local owner = ARGV[1]
local holder = redis.call('GET', KEYS[1])
local released = 0
if holder == owner then
  redis.call('DEL', KEYS[1])
  released = 1
  holder = false
  if ARGV[2] ~= '' and tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[2])
  end
end
-- Nobody in line (the common case): nothing to withdraw or offer.
if redis.call('EXISTS', KEYS[3]) == 0 then
  if released == 1 then redis.call('PUBLISH', ARGV[5], '') end
  return released
end
local was_first = false
if ARGV[3] ~= '1' then
  was_first = redis.call('ZRANK', KEYS[3], owner) == 0
  leave(owner)
end
if holder or (released == 0 and not was_first) then return released end
local now = now_ms()
local first, due = first_in_line(now)
if first then
  local direct = redis.call('HGET', KEYS[4], first .. '\\0t')
  if not (direct and grant(first, now, direct, tonumber(ARGV[4]), ARGV[5])) then
    offer(first, due, now, tonumber(ARGV[4]), ARGV[5])
  end
elseif released == 1 then
  redis.call('PUBLISH', ARGV[5], '')
end
if redis.call('ZCARD', KEYS[3]) == 0 then redis.call('DEL', KEYS[4]) end
return released
`;

/**
 * ARGV: owner, ttl ms, and the key channel when this extension confirms a key a release handed over.
 * Compare-and-PEXPIRE: 1 if the owner held the key. A confirmation tells the two now first in line, who heard of
 * the hand-over, that the owner came: they need not look again when its hand-off time is over.
 */
const EXTEND = `${COMMON}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local extended = redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] then
  for _, behind in ipairs(redis.call('ZRANGE', KEYS[3], 0, 1)) do tell(behind, '+' .. ARGV[1], ARGV[3]) end
end
return extended
`;

/**
 * ARGV: owner ('' for a newcomer), '1' if the owner believes it has a place in line. What an acquire by that
 * owner would find, without changing anything: {0, 0} free for it — or its place is gone (it lapsed while the
 * owner was slow to come), so it must try again now to get back in line; {1, pttl} held; {2, ms} free but
 * promised to the first in line for ms more.
 */
const PROBE = `
if ARGV[2] == '1' and not redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {0, 0} end
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -1 then return {1, 1000} end
if pttl > 0 then return {1, pttl} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The first live place decides; lapsed ones ahead of it are skipped (acquire drops them).
for _, first in ipairs(redis.call('ZRANGE', KEYS[3], 0, 15)) do
  local due = tonumber(redis.call('HGET', KEYS[4], first) or '0')
  if due > now then
    if first == ARGV[1] then return {0, 0} end
    return {2, due - now}
  end
end
return {0, 0}
`;

function script(name: string, source: string, ordered: boolean): LuaScript {
  return { name, source, sha: createHash('sha1').update(source).digest('hex'), keys: 4, ordered };
}

export const scripts = {
  acquire: script('acquire', ACQUIRE, true),
  release: script('release', RELEASE, true),
  extend: script('extend', EXTEND, true),
  probe: script('probe', PROBE, false),
} as const;
