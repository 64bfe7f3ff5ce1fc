"""The Lua scripts of the redis queue backend: every state change is one script, so it is
atomic against every other client. Key layout and rules: ``redis_backend``'s docstring."""

NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

REQUIRE_QUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('QueueDoesNotExist no queue named ' .. ARGV[2])
end
"""

# KEYS: meta. ARGV: prefix, queue, then attribute name/value pairs.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 3, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
  end
  return 1
end
""" + NOW + """
redis.call('HSET', KEYS[1], '_created', now, unpack(ARGV, 3))
return 1
"""

# KEYS: meta, pending, wake. ARGV: prefix, queue, then id/body/md5/delay/attrs per message.
SEND = REQUIRE_QUEUE + NOW + """
local default_delay = tonumber(redis.call('HGET', KEYS[1], 'DelaySeconds'))
local sent = 0
for i = 3, #ARGV, 5 do
  local delay = tonumber(ARGV[i + 3]) or default_delay
  redis.call('HSET', ARGV[1] .. 'm:' .. ARGV[i], 'body', ARGV[i + 1], 'md5', ARGV[i + 2],
             'sent', now, 'count', 0, 'attrs', ARGV[i + 4])
  redis.call('ZADD', KEYS[2], now + delay * 1000, ARGV[i])
  redis.call('RPUSH', KEYS[3], 1)
  sent = sent + 1
end
redis.call('LTRIM', KEYS[3], -1000, -1)
redis.call('PEXPIRE', KEYS[3], 60000)
return now
"""

# KEYS: meta, pending, in flight, wake. ARGV: prefix, queue, max, visibility timeout ('' =
# default). Finding nothing clears the wake-up tokens: they are stale, and a long poll that
# took them would only look again for nothing.
RECEIVE = REQUIRE_QUEUE + NOW + """
local prefix, max = ARGV[1], tonumber(ARGV[3])
local timeout = tonumber(ARGV[4]) or tonumber(redis.call('HGET', KEYS[1], 'VisibilityTimeout'))
local retention = tonumber(redis.call('HGET', KEYS[1], 'MessageRetentionPeriod')) * 1000
local dlq = redis.call('HGET', KEYS[1], '_dlq')
local max_receive = tonumber(redis.call('HGET', KEYS[1], '_max_receive') or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZREM', KEYS[3], expired[i])
  redis.call('ZADD', KEYS[2], expired[i + 1], expired[i])
end
local out = {}
while #out < max do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, max - #out)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local key = prefix .. 'm:' .. id
    local sent = tonumber(redis.call('HGET', key, 'sent'))
    redis.call('ZREM', KEYS[2], id)
    if not sent or sent < now - retention then
      redis.call('DEL', key)
    elseif dlq and max_receive > 0
        and tonumber(redis.call('HGET', key, 'count')) >= max_receive
        and redis.call('EXISTS', prefix .. 'q:' .. dlq) == 1 then
      redis.call('ZADD', prefix .. 'p:' .. dlq, now, id)
      redis.call('RPUSH', prefix .. 'w:' .. dlq, 1)
    else
      local count = redis.call('HINCRBY', key, 'count', 1)
      redis.call('HSETNX', key, 'first', now)
      redis.call('ZADD', KEYS[3], now + timeout * 1000, id)
      local f = redis.call('HMGET', key, 'body', 'md5', 'sent', 'first', 'attrs')
      out[#out + 1] = {id, count, f[1], f[2], f[3], f[4], f[5]}
    end
  end
end
if #out == 0 then redis.call('DEL', KEYS[4]) end
return out
"""

# FIFO queues: the pending set is scored by sequence number (send order), not time, and
# each message hash also holds its group, deduplication id, sequence and visible-at time.

# KEYS: meta, pending, wake, sequence. ARGV: prefix, queue, then per message
# id/body/md5/attrs/group/deduplication id/content hash. Returns per message
# {message id, sequence} (the first message's, for a duplicate) or {'', error code}.
SEND_FIFO = REQUIRE_QUEUE + NOW + """
local prefix, queue = ARGV[1], ARGV[2]
local delay = tonumber(redis.call('HGET', KEYS[1], 'DelaySeconds'))
local content_based = redis.call('HGET', KEYS[1], 'ContentBasedDeduplication') == 'true'
local out = {}
for i = 3, #ARGV, 7 do
  local deduplication = ARGV[i + 5]
  if deduplication == '' and content_based then deduplication = ARGV[i + 6] end
  if deduplication == '' then
    out[#out + 1] = {'', 'InvalidParameterValue'}
  else
    local seen_key = prefix .. 'd:' .. queue .. ':' .. deduplication
    local seen = redis.call('GET', seen_key)
    if seen then
      local split = string.find(seen, ' ')
      out[#out + 1] = {string.sub(seen, 1, split - 1), string.sub(seen, split + 1)}
    else
      local sequence = redis.call('INCR', KEYS[4])
      redis.call('SET', seen_key, ARGV[i] .. ' ' .. sequence, 'PX', 300000)
      redis.call('HSET', prefix .. 'm:' .. ARGV[i], 'body', ARGV[i + 1], 'md5', ARGV[i + 2],
                 'sent', now, 'count', 0, 'attrs', ARGV[i + 3], 'group', ARGV[i + 4],
                 'dedup', deduplication, 'seq', sequence, 'visible', now + delay * 1000)
      redis.call('ZADD', KEYS[2], sequence, ARGV[i])
      redis.call('RPUSH', KEYS[3], 1)
      out[#out + 1] = {ARGV[i], tostring(sequence)}
    end
  end
end
redis.call('LTRIM', KEYS[3], -1000, -1)
redis.call('PEXPIRE', KEYS[3], 60000)
return out
"""

# KEYS: meta, pending, in flight, wake. ARGV: prefix, queue, max, visibility timeout.
# A group with a message in flight (or not yet visible) delivers nothing after it, so a
# group's messages are processed one batch at a time, in order. The scan only reads; the
# moves happen after it, so the page offsets stay valid.
RECEIVE_FIFO = REQUIRE_QUEUE + NOW + """
local prefix, max = ARGV[1], tonumber(ARGV[3])
local timeout = tonumber(ARGV[4]) or tonumber(redis.call('HGET', KEYS[1], 'VisibilityTimeout'))
local retention = tonumber(redis.call('HGET', KEYS[1], 'MessageRetentionPeriod')) * 1000
local dlq = redis.call('HGET', KEYS[1], '_dlq')
local max_receive = tonumber(redis.call('HGET', KEYS[1], '_max_receive') or '0')
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], redis.call('HGET', prefix .. 'm:' .. id, 'seq'), id)
end
local busy = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  busy[redis.call('HGET', prefix .. 'm:' .. id, 'group')] = true
end
local chosen, expired, redriven = {}, {}, {}
local offset = 0
while #chosen < max do
  local ids = redis.call('ZRANGE', KEYS[2], offset, offset + 99)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    local key = prefix .. 'm:' .. id
    local fields = redis.call('HMGET', key, 'sent', 'group', 'visible', 'count')
    local sent, group = tonumber(fields[1]), fields[2]
    if not sent or sent < now - retention then
      expired[#expired + 1] = id
    elseif not busy[group] then
      if tonumber(fields[3]) > now then
        busy[group] = true
      elseif dlq and max_receive > 0 and tonumber(fields[4]) >= max_receive
          and redis.call('EXISTS', prefix .. 'q:' .. dlq) == 1 then
        redriven[#redriven + 1] = id
      else
        chosen[#chosen + 1] = id
        if #chosen >= max then break end
      end
    end
  end
end
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('DEL', prefix .. 'm:' .. id)
end
for _, id in ipairs(redriven) do
  local sequence = redis.call('INCR', prefix .. 's:' .. dlq)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HSET', prefix .. 'm:' .. id, 'seq', sequence, 'visible', now)
  redis.call('ZADD', prefix .. 'p:' .. dlq, sequence, id)
  redis.call('RPUSH', prefix .. 'w:' .. dlq, 1)
end
local out = {}
for _, id in ipairs(chosen) do
  local key = prefix .. 'm:' .. id
  local count = redis.call('HINCRBY', key, 'count', 1)
  redis.call('HSETNX', key, 'first', now)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], now + timeout * 1000, id)
  local f = redis.call('HMGET', key, 'body', 'md5', 'sent', 'first', 'attrs', 'group', 'dedup',
                       'seq')
  out[#out + 1] = {id, count, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}
end
if #out == 0 then redis.call('DEL', KEYS[4]) end
return out
"""

# KEYS: meta, pending, in flight. ARGV: prefix, queue, then id/count pairs.
# A handle whose count is not the message's latest (it was received again since) is stale
# and deletes nothing; so does a handle for a message no longer in this queue.
DELETE = REQUIRE_QUEUE + """
for i = 3, #ARGV, 2 do
  local key = ARGV[1] .. 'm:' .. ARGV[i]
  local count = redis.call('HGET', key, 'count')
  local here = redis.call('ZSCORE', KEYS[3], ARGV[i]) or redis.call('ZSCORE', KEYS[2], ARGV[i])
  if count and tonumber(count) == tonumber(ARGV[i + 1]) and here then
    redis.call('ZREM', KEYS[3], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('DEL', key)
  end
end
return 0
"""

# KEYS: meta, pending, in flight, wake. ARGV: prefix, queue, then id/count/timeout triples.
# Returns the indexes (0-based) of entries whose message was not in flight.
CHANGE_VISIBILITY = REQUIRE_QUEUE + NOW + """
local not_in_flight = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local count = redis.call('HGET', ARGV[1] .. 'm:' .. id, 'count')
  local deadline = tonumber(redis.call('ZSCORE', KEYS[3], id))
  if count and tonumber(count) == tonumber(ARGV[i + 1]) and deadline and deadline > now then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[i + 2]) * 1000, id)
    if tonumber(ARGV[i + 2]) == 0 then redis.call('RPUSH', KEYS[4], 1) end
  else
    not_in_flight[#not_in_flight + 1] = (i - 3) / 3
  end
end
return not_in_flight
"""

# KEYS: meta, pending, in flight. (A FIFO queue's pending set is scored by sequence, so
# all of it counts as visible: its delayed count is approximate, as SQS's counts are.)
COUNTS = REQUIRE_QUEUE + NOW + """
local returned = redis.call('ZCOUNT', KEYS[3], '-inf', now)
if redis.call('HGET', KEYS[1], 'FifoQueue') == 'true' then
  return {redis.call('ZCARD', KEYS[2]) + returned,
          redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf'), 0}
end
return {
  redis.call('ZCOUNT', KEYS[2], '-inf', now) + returned,
  redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf'),
  redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'),
}
"""
