-- Cycles through pre-generated bearer tokens (one per user), or request bodies (one
-- per user: logins), and counts statuses.
-- Environment: WRK_TOKENS (file, one token a line) or WRK_BODIES (file, one JSON body
-- a line), WRK_OFFSET (the first line to use), WRK_THREADS (wrk's -t), WRK_METHOD,
-- WRK_PATH. With WRK_ANSWERS (a count), each thread notes when it has had its share
-- of that many answers (CLOCK_MONOTONIC, as Python's time.monotonic reads it).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } flashcart_timespec;
int clock_gettime(int clock, flashcart_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local now = ffi.new("flashcart_timespec")
local tokens = {}
local bodies = {}
local method = os.getenv("WRK_METHOD") or "GET"
local path = os.getenv("WRK_PATH") or "/healthz"
local counter = 0
local step = 1
statuses = {}
answers = 0
answered_at_us = 0
local share = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local started = os.clock()
  local file = os.getenv("WRK_TOKENS")
  if file then
    for line in io.lines(file) do
      table.insert(tokens, line)
    end
  end
  file = os.getenv("WRK_BODIES")
  if file then
    for line in io.lines(file) do
      table.insert(bodies, line)
    end
  end
  -- Thread i takes tokens offset + i, offset + i + threads, ...: no two requests of
  -- a run share a user until the file wraps.
  step = tonumber(os.getenv("WRK_THREADS") or "1")
  counter = tonumber(os.getenv("WRK_OFFSET") or "0") + id
  -- CPU spent loading tokens is not the requests' (the bench subtracts it). os.clock
  -- is the whole process's: the first thread's init runs before any requests, the
  -- others' while earlier threads already send theirs.
  local wanted = tonumber(os.getenv("WRK_ANSWERS") or "0")
  share = math.ceil(wanted / step)
  init_cpu = os.clock()
  load_cpu = init_cpu - started
end

function request()
  local headers = { ["Content-Type"] = "application/json" }
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1]
    counter = counter + step
  end
  local body = nil
  if #bodies > 0 then
    body = bodies[(counter % #bodies) + 1]
    counter = counter + step
  elseif method == "POST" then
    body = "{}"
  end
  return wrk.format(method, path, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  answers = answers + 1
  if answers == share then
    ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
    answered_at_us = tonumber(now.tv_sec) * 1e6 + tonumber(now.tv_nsec) / 1e3
  end
end

function done(summary, latency, requests)
  local merged = {}
  local one = threads[1]
  local init_cpu_us = math.floor(
    (one:get("init_cpu") + (#threads - 1) * one:get("load_cpu")) * 1e6)
  -- When the last thread had its share (0: one never did).
  local answered = 0
  for _, thread in ipairs(threads) do
    local at = thread:get("answered_at_us")
    if at == 0 or answered == -1 then answered = -1 elseif at > answered then answered = at end
    local s = thread:get("statuses")
    for code, n in pairs(s) do
      merged[code] = (merged[code] or 0) + n
    end
  end
  io.write("JSON_RESULT ")
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "init_cpu_us": %d, "answered_at_us": %d, "statuses": {',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), init_cpu_us, math.floor(math.max(answered, 0))))
  local first = true
  for code, n in pairs(merged) do
    if not first then io.write(", ") end
    io.write(string.format('"%d": %d', code, n))
    first = false
  end
  io.write("}}\n")
end
