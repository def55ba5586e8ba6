/**
 * The fair waiting room in front of BullMQ (src/queue/bullmq-queue.ts). Open-source BullMQ takes jobs
 * in priority order, first come first served within one, and has no per-group fairness (that is
 * BullMQ Pro), so one key with 500 queued jobs would hold every worker until they are done. Jobs
 * therefore wait here, in Redis, and move into BullMQ only as workers free up: BullMQ's own queue
 * stays about as deep as the idle slots, and the room decides the order. BullMQ still delivers,
 * locks, renews and recovers stalled jobs; the room only decides which job goes in next.
 *
 * Order: start-time fair queueing per priority. Each key has a FIFO list; a sorted set holds every
 * key with waiting jobs, scored by the virtual start time of its next job. Taking a job takes the
 * lowest score, and the key's next job starts 1/weight later; a key that had nothing waiting starts
 * at the virtual time of the last job taken (or where its own last turn ended, if later). So keys take
 * turns in proportion to their weights, and a newcomer's first job is next in line, whatever another
 * key has queued. (Weighted fair queueing rather than deficit round robin: every job costs one turn
 * here, so both give the same order, and the virtual-time form needs no round pointer.)
 *
 * Running limits: a key (or group) with `maxRunning` jobs moved into BullMQ and not yet finished is
 * skipped until one finishes. The slots that can take a job are the workers' registered concurrency
 * minus what BullMQ holds (active, waiting, delayed) and what is being moved in.
 *
 * Durability: every step is one Lua script, atomic in Redis. Moving a job is two steps: the script
 * takes it from its list into `moving` (with a deadline), the caller adds it to BullMQ, then a second
 * script drops it from `moving`. A caller that dies in between leaves the job in `moving`; once its
 * deadline passes, the next feed hands it out again and it is added again (BullMQ's add is a no-op
 * for a job id it holds). So a crash can only duplicate a delivery, never lose one; the store's
 * attempt fencing makes a duplicate harmless.
 *
 * Keys (P = `<redis.prefix>:<queue name>`, e.g. `easel:images`): `P:fair:waiting` (sorted set of every
 * waiting job id: KEDA counts it), `P:fair:q:<rank>:<key>`, `P:fair:sched:<rank>`, `P:fair:v:<rank>`,
 * `P:fair:last:<rank>`, `P:fair:cfg`, `P:fair:jobs`, `P:fair:moving`, `P:fair:running`,
 * `P:fair:run:<key>`, `P:fair:grun:<group>`, `P:fair:consumers`, `P:fair:alive`.
 */
import type { Redis } from 'ioredis';
import { PRIORITY_RANK } from '../core/job.ts';
import type { KeyShare } from '../fairness/policy.ts';

export interface RoomEntry {
  jobId: string;
  /** PRIORITY_RANK of the job. */
  rank: number;
  keyId: string;
  share: KeyShare;
}

/** A job the room handed out: the caller adds it to BullMQ, then commits it. */
export interface RoomPick {
  jobId: string;
  rank: number;
}

/** What the room holds after a call: jobs waiting in it, and worker slots still free (may be negative). */
export interface RoomState {
  waiting: number;
  free: number;
}

/** The jobs a call handed out, and the room as that call left it. */
export interface RoomAnswer {
  picks: RoomPick[];
  state: RoomState;
}

export interface FairRoomOptions {
  /** How long a job may sit in `moving` before another process adds it to BullMQ again. Default 15 s. */
  movingTtlMs?: number;
  /**
   * Jobs per registered worker slot that may wait in BullMQ beyond the running ones. Default 1: a
   * worker finishing a job finds the next one there instead of waiting for a round trip through the
   * room (at zero job time that round trip halved throughput), and a newcomer's first job waits
   * behind at most one job per slot.
   */
  lookahead?: number;
}

const RANKS = JSON.stringify([...new Set(Object.values(PRIORITY_RANK))].sort((a, b) => a - b));

const LUA = `
local rcall = redis.call
local op = ARGV[1]
local P = ARGV[2]
local F = P .. ':fair:'
local RANKS = cjson.decode(ARGV[3])
local MOVING_TTL = tonumber(ARGV[4])
local LOOKAHEAD = tonumber(ARGV[5])
local SCAN = 128
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(x) return string.format('%.17g', x) end

local cfgCache = {}
local function cfgOf(key)
  local c = cfgCache[key]
  if c == nil then
    local raw = rcall('HGET', F .. 'cfg', key)
    if raw then c = cjson.decode(raw) else c = { w = 1, m = false, g = '', gm = false } end
    cfgCache[key] = c
  end
  return c
end

local function eligible(key)
  local c = cfgOf(key)
  if c.m and rcall('SCARD', F .. 'run:' .. key) >= c.m then return false end
  if c.g ~= '' and c.gm and rcall('SCARD', F .. 'grun:' .. c.g) >= c.gm then return false end
  return true
end

-- Registered worker slots, plus one job waiting in BullMQ per slot (LOOKAHEAD), minus what BullMQ
-- holds and what is being moved in.
local function freeSlots()
  local dead = rcall('ZRANGEBYSCORE', F .. 'alive', '-inf', now)
  for _, id in ipairs(dead) do
    rcall('HDEL', F .. 'consumers', id)
    rcall('ZREM', F .. 'alive', id)
  end
  local cap = 0
  for _, c in ipairs(rcall('HVALS', F .. 'consumers')) do cap = cap + tonumber(c) end
  local busy = rcall('LLEN', P .. ':active') + rcall('LLEN', P .. ':wait') + rcall('LLEN', P .. ':paused')
    + rcall('ZCARD', P .. ':prioritized') + rcall('ZCARD', P .. ':delayed') + rcall('ZCARD', F .. 'moving')
  return math.floor(cap * (1 + LOOKAHEAD)) - busy
end

-- Free slots left after the last pick (reported back, with the count of waiting jobs, so that a
-- process may add jobs straight to BullMQ while the room holds none: see RoomState).
local slotsLeft = 0
local function pick(max)
  local picks = {}
  local avail = freeSlots()
  local free = avail
  if free > max then free = max end
  for _, rank in ipairs(RANKS) do
    if free <= 0 then break end
    local sched = F .. 'sched:' .. rank
    local vkey = F .. 'v:' .. rank
    local v0 = tonumber(rcall('GET', vkey) or '0')
    local v = v0
    while free > 0 do
      local cands = rcall('ZRANGE', sched, 0, SCAN - 1, 'WITHSCORES')
      if #cands == 0 then break end
      local key, tag
      for i = 1, #cands, 2 do
        if eligible(cands[i]) then
          key = cands[i]
          tag = tonumber(cands[i + 1])
          break
        end
      end
      if not key then break end
      local q = F .. 'q:' .. rank .. ':' .. key
      local jobId = rcall('LPOP', q)
      local finish = tag + 1 / cfgOf(key).w
      if rcall('LLEN', q) > 0 then
        rcall('ZADD', sched, num(finish), key)
      else
        rcall('ZREM', sched, key)
        rcall('HSET', F .. 'last:' .. rank, key, num(finish))
      end
      if jobId then
        if tag > v then v = tag end
        rcall('ZREM', F .. 'waiting', jobId)
        local meta = rcall('HGET', F .. 'jobs', jobId)
        if meta then
          local m = cjson.decode(meta)
          rcall('ZADD', F .. 'moving', now + MOVING_TTL, jobId)
          rcall('ZADD', F .. 'running', now, jobId)
          rcall('SADD', F .. 'run:' .. m.k, jobId)
          if m.g ~= '' then rcall('SADD', F .. 'grun:' .. m.g, jobId) end
          picks[#picks + 1] = jobId
          picks[#picks + 1] = tostring(rank)
          free = free - 1
          avail = avail - 1
        end
      end
    end
    if v > v0 then rcall('SET', vkey, num(v)) end
  end
  slotsLeft = avail
  return picks
end

local function withState(picks)
  return { picks, rcall('ZCARD', F .. 'waiting'), slotsLeft }
end

-- Jobs whose mover did not confirm them in time: handed out again (added to BullMQ again).
local function recover(into)
  local expired = rcall('ZRANGEBYSCORE', F .. 'moving', '-inf', now, 'LIMIT', 0, 100)
  for _, jobId in ipairs(expired) do
    local meta = rcall('HGET', F .. 'jobs', jobId)
    if meta then
      rcall('ZADD', F .. 'moving', now + MOVING_TTL, jobId)
      into[#into + 1] = jobId
      into[#into + 1] = tostring(cjson.decode(meta).r)
    else
      rcall('ZREM', F .. 'moving', jobId)
    end
  end
  return into
end

-- A moved job finished (or left BullMQ): its running slot is free again.
local function finish(jobId)
  if not rcall('ZSCORE', F .. 'running', jobId) then return end
  local meta = rcall('HGET', F .. 'jobs', jobId)
  if meta then
    local m = cjson.decode(meta)
    rcall('SREM', F .. 'run:' .. m.k, jobId)
    if m.g ~= '' then rcall('SREM', F .. 'grun:' .. m.g, jobId) end
  end
  rcall('ZREM', F .. 'running', jobId)
  rcall('ZREM', F .. 'moving', jobId)
  rcall('HDEL', F .. 'jobs', jobId)
end

if op == 'enqueue' then
  local maxPick = tonumber(ARGV[6])
  local n = tonumber(ARGV[7])
  local added = {}
  local cfgWritten = {}
  for i = 0, n - 1 do
    local b = 8 + i * 7
    local jobId, rank, key, g = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 5]
    if rcall('HEXISTS', F .. 'jobs', jobId) == 1 or rcall('EXISTS', P .. ':' .. jobId) == 1 then
      added[#added + 1] = 0
    else
      local m = ARGV[b + 4]
      local gm = ARGV[b + 6]
      rcall('HSET', F .. 'jobs', jobId, cjson.encode({ r = tonumber(rank), k = key, g = g }))
      if not cfgWritten[key] then
        rcall('HSET', F .. 'cfg', key, cjson.encode({ w = tonumber(ARGV[b + 3]), m = (m ~= '' and tonumber(m)) or false, g = g, gm = (gm ~= '' and tonumber(gm)) or false }))
        cfgWritten[key] = true
        cfgCache[key] = nil
      end
      local q = F .. 'q:' .. rank .. ':' .. key
      if rcall('RPUSH', q, jobId) == 1 then
        local v = tonumber(rcall('GET', F .. 'v:' .. rank) or '0')
        local last = tonumber(rcall('HGET', F .. 'last:' .. rank, key) or '0')
        local s = v
        if last > v then s = last else rcall('HDEL', F .. 'last:' .. rank, key) end
        rcall('ZADD', F .. 'sched:' .. rank, num(s), key)
      end
      rcall('ZADD', F .. 'waiting', now, jobId)
      added[#added + 1] = 1
    end
  end
  return { added, withState(pick(maxPick)) }
elseif op == 'feed' then
  local id = ARGV[7]
  if id ~= '' then
    rcall('HSET', F .. 'consumers', id, ARGV[8])
    rcall('ZADD', F .. 'alive', now + tonumber(ARGV[9]), id)
  end
  return withState(recover(pick(tonumber(ARGV[6]))))
elseif op == 'done' then
  for i = 7, #ARGV do finish(ARGV[i]) end
  return withState(pick(tonumber(ARGV[6])))
elseif op == 'commit' then
  for i = 6, #ARGV, 500 do rcall('ZREM', F .. 'moving', unpack(ARGV, i, math.min(i + 499, #ARGV))) end
  return 0
elseif op == 'remove' then
  local jobId = ARGV[6]
  if not rcall('ZSCORE', F .. 'waiting', jobId) then return 0 end
  local meta = rcall('HGET', F .. 'jobs', jobId)
  rcall('ZREM', F .. 'waiting', jobId)
  rcall('HDEL', F .. 'jobs', jobId)
  if meta then
    local m = cjson.decode(meta)
    local q = F .. 'q:' .. m.r .. ':' .. m.k
    rcall('LREM', q, 1, jobId)
    if rcall('LLEN', q) == 0 then rcall('ZREM', F .. 'sched:' .. m.r, m.k) end
  end
  return 1
elseif op == 'deregister' then
  rcall('HDEL', F .. 'consumers', ARGV[6])
  rcall('ZREM', F .. 'alive', ARGV[6])
  return 0
elseif op == 'counts' then
  local moving = 0
  for _, jobId in ipairs(rcall('ZRANGE', F .. 'moving', 0, -1)) do
    if rcall('EXISTS', P .. ':' .. jobId) == 0 then moving = moving + 1 end
  end
  return { rcall('ZCARD', F .. 'waiting'), moving }
elseif op == 'repair' then
  local fixed = 0
  for _, jobId in ipairs(rcall('ZRANGE', F .. 'running', 0, 999)) do
    if rcall('EXISTS', P .. ':' .. jobId) == 0 and not rcall('ZSCORE', F .. 'moving', jobId) then
      finish(jobId)
      fixed = fixed + 1
    end
  end
  return fixed
end
return redis.error_reply('unknown fair room operation ' .. tostring(op))
`;

type RoomCommand = (...args: (string | number)[]) => Promise<unknown>;

const answerOf = (reply: unknown): RoomAnswer => {
  const [flat, waiting, free] = reply as [string[], number, number];
  const picks: RoomPick[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) picks.push({ jobId: String(flat[i]), rank: Number(flat[i + 1]) });
  return { picks, state: { waiting: Number(waiting), free: Number(free) } };
};

export class FairRoom {
  /** `<redis.prefix>:<queue name>`: BullMQ's own keys are `<base>:wait`, `<base>:<job id>`, … */
  readonly base: string;
  readonly movingTtlMs: number;
  readonly lookahead: number;
  private readonly run: RoomCommand;

  constructor(client: Redis, base: string, opts: FairRoomOptions = {}) {
    this.base = base;
    this.movingTtlMs = opts.movingTtlMs ?? 15_000;
    this.lookahead = opts.lookahead ?? 1;
    const name = 'easelFairRoom';
    if (!(name in client)) client.defineCommand(name, { numberOfKeys: 0, lua: LUA });
    const command = (client as unknown as Record<string, RoomCommand>)[name]!.bind(client);
    this.run = (op, ...args) => command(op, this.base, RANKS, this.movingTtlMs, this.lookahead, ...args);
  }

  /** The key names KEDA and operators look at. */
  get waitingKey(): string {
    return `${this.base}:fair:waiting`;
  }

  /**
   * Puts jobs in their keys' lines (a job id the room or BullMQ holds already is skipped) and hands
   * out up to `maxPick` jobs for slots that are free now.
   */
  async enqueue(entries: RoomEntry[], maxPick: number): Promise<RoomAnswer & { added: boolean[] }> {
    const args: (string | number)[] = [maxPick, entries.length];
    for (const e of entries) {
      const s = e.share;
      args.push(e.jobId, e.rank, e.keyId, s.weight, s.maxRunning ?? '', s.group ?? '', s.groupMaxRunning ?? '');
    }
    const [added, answer] = (await this.run('enqueue', ...args)) as [number[], unknown];
    return { added: added.map((a) => Number(a) === 1), ...answerOf(answer) };
  }

  /**
   * Hands out jobs for the free slots, plus any whose mover never confirmed them. With a consumer,
   * first (re)registers its concurrency for `ttlMs`.
   */
  async feed(maxPick: number, consumer?: { id: string; concurrency: number; ttlMs: number }): Promise<RoomAnswer> {
    return answerOf(await this.run('feed', maxPick, consumer?.id ?? '', consumer?.concurrency ?? 0, consumer?.ttlMs ?? 0));
  }

  /** Moved jobs that finished: their keys' running slots are free; hands out jobs for them. */
  async done(jobIds: string[], maxPick: number): Promise<RoomAnswer> {
    return answerOf(await this.run('done', maxPick, ...jobIds));
  }

  /** The picked jobs are in BullMQ now. */
  async commit(jobIds: string[]): Promise<void> {
    if (jobIds.length > 0) await this.run('commit', ...jobIds);
  }

  /** Removes a job still waiting in the room; false when it has been handed out or is unknown. */
  async remove(jobId: string): Promise<boolean> {
    return Number(await this.run('remove', jobId)) === 1;
  }

  async deregister(consumerId: string): Promise<void> {
    await this.run('deregister', consumerId);
  }

  /** Jobs waiting in the room, and picked ones not in BullMQ yet. */
  async counts(): Promise<{ waiting: number; moving: number }> {
    const [waiting, moving] = (await this.run('counts')) as [number, number];
    return { waiting: Number(waiting), moving: Number(moving) };
  }

  /** Frees the running slots of moved jobs that left BullMQ without being reported done. */
  async repair(): Promise<number> {
    return Number(await this.run('repair'));
  }
}
