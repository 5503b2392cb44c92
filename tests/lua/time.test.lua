-- handoff.time: the clock and local time in named IANA zones (runtime/script/bindings/time.c).
-- Expected values were read off `TZ=<zone> date -d @<epoch>`.
local time = require "handoff.time"
local T = {}

local function fields(t)
  return string.format("%04d-%02d-%02d %02d:%02d:%02d wday=%d dst=%s", t.year, t.month, t.day, t.hour,
    t.min, t.sec, t.wday, tostring(t.isdst))
end

function T.now_is_epoch_seconds()
  local now = time.now()
  assert(math.type(now) == "float")
  assert(math.abs(now - os.time()) < 2, "now agrees with os.time: " .. now)
end

function T.localtime_in_winter_and_summer()
  -- 1774600200 = Fri 2026-03-27 08:30:00 UTC; 1774855800 = Mon 2026-03-30 07:30:00 UTC
  assert(fields(time.localtime("Europe/Berlin", 1774600200)) == "2026-03-27 09:30:00 wday=5 dst=false")
  assert(fields(time.localtime("Europe/Berlin", 1774855800)) == "2026-03-30 09:30:00 wday=1 dst=true")
  assert(fields(time.localtime("America/New_York", 1774855800)) == "2026-03-30 03:30:00 wday=1 dst=true")
  assert(fields(time.localtime("UTC", 1774855800)) == "2026-03-30 07:30:00 wday=1 dst=false")
  -- 1774785600 = Sun 2026-03-29 12:00 UTC: Sunday is 7
  assert(time.localtime("Asia/Tokyo", 1774785600).wday == 7)
  assert(fields(time.localtime("Asia/Tokyo", 1774785600.75)) == "2026-03-29 21:00:00 wday=7 dst=false")
end

function T.unknown_zones_return_nil_and_reason()
  for _, tz in ipairs({ "Mars/Olympus", "../../etc/passwd", "Europe/../UTC", "/etc/localtime",
                        "Europe", "", string.rep("A", 300) }) do
    local t, err = time.localtime(tz, 0)
    assert(t == nil and err == "unknown time zone", "zone '" .. tz .. "' is refused")
  end
end

function T.misuse_raises()
  local ok, err = pcall(time.localtime, nil, 0)
  assert(not ok and err:match("bad argument #1"), err)
  ok, err = pcall(time.localtime, "UTC", "noon")
  assert(not ok and err:match("bad argument #2"), err)
  ok, err = pcall(time.localtime, "UTC", 1e300)
  assert(not ok and err:match("epoch out of range"), err)
end

function T.process_zone_is_restored()
  local tz, local_epoch0 = os.getenv("TZ"), os.date("%Y-%m-%d %H:%M", 0)
  assert(time.localtime("Pacific/Kiritimati", 0))
  assert(os.getenv("TZ") == tz, "TZ is put back")
  assert(os.date("%Y-%m-%d %H:%M", 0) == local_epoch0, "the process zone is put back")
end

return T
