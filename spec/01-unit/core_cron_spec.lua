-- The cron matcher and time zones (core/cron.c, core/tz.c) through dp.core.
local core = require "dp.core"

-- "2026-03-29T01:00Z" -> Unix seconds
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function utc(s)
  local y, mo, d, h, mi = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+)Z$")
  assert(y, s)
  return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60
end

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%MZ", t)
end

-- the first n firing instants after `after`, as ISO strings
local function fires(expr, tz, after, n)
  local out, t = {}, utc(after)
  for _ = 1, n do
    local nxt, err = core.cron_next(expr, tz, t)
    assert(nxt, err)
    out[#out + 1] = iso(nxt)
    t = nxt
  end
  return out
end

describe("cron expressions", function()
  it("accepts the Vixie syntax: lists, ranges, steps, names, macros", function()
    for _, e in ipairs({ "* * * * *", "*/15 * * * *", "0 6 * * mon-fri", "0 0 1 jan,jul *",
      "5/20 * * * *", "0-30/10 8-18/2 1,15 * *", "0 0 * * 7", "0 0 * * SUN", "@hourly", "@daily",
      "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "  0   6 * *  *  " }) do
      assert.is_true(core.cron_check(e), e)
    end
  end)

  it("refuses what is not a cron expression, saying which field and why", function()
    local cases = {
      ["61 * * * *"] = '"61 * * * *" is not a valid cron expression: minute 61 is out of range 0-59',
      ["* 24 * * *"] = "hour 24 is out of range 0-23",
      ["* * 0 * *"] = "day of month 0 is out of range 1-31",
      ["* * * 13 *"] = "month 13 is out of range 1-12",
      ["* * * * 8"] = "day of week 8 is out of range 0-7",
      ["* * * 1-13 *"] = "month 13 is out of range 1-12",
      ["* * * foo *"] = 'month "foo" is not a number or a name',
      ["0 0 * * fry"] = 'day of week "fry" is not a number or a name',
      ["*/0 * * * *"] = 'minute step "0" is not a positive number',
      ["*/ * * * *"] = 'minute step "" is not a positive number',
      ["30-10 * * * *"] = "minute range 30-10 is reversed",
      ["0 9-5 * * *"] = "hour range 9-5 is reversed",
      ["1,,2 * * * *"] = 'minute "" is not a number',
      ["* * * *"] = '"* * * *" is not a cron expression: expected 5 fields (minute hour day-of-month month day-of-week), got 4',
      ["* * * * * *"] = "expected 5 fields (minute hour day-of-month month day-of-week), got 6",
      [""] = "got 0",
      ["@reboot"] = "is not a cron macro",
      ["@daily 5"] = "is not a cron macro",
      ["1-2-3 * * * *"] = 'minute "1-2-3" cannot be read',
    }
    for e, want in pairs(cases) do
      local ok, err = core.cron_check(e)
      assert.is_nil(ok, e)
      assert.truthy(err:find(want, 1, true), e .. " -> " .. tostring(err))
    end
  end)
end)

describe("time zones from the tz database", function()
  it("refuses names with no zoneinfo file, and paths", function()
    for _, name in ipairs({ "Mars/Olympus", "Europe/Nowhere", "../etc/passwd", "/etc/localtime",
      "Europe/../UTC", "", "Europe//Amsterdam", "Europe/Amsterdam\n" }) do
      local ok, err = core.tz_check(name)
      assert.is_nil(ok, name)
      assert.truthy(err:find("time zone", 1, true), err)
    end
    assert.is_true(core.tz_check("UTC"))
    assert.is_true(core.tz_check("Europe/Amsterdam"))
  end)

  it("gives the offsets glibc gives, before, between and long after the file's transitions", function()
    local zones = { "Europe/Amsterdam", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
      "Pacific/Chatham", "America/Sao_Paulo", "Europe/London", "UTC", "Africa/Casablanca",
      "America/St_Johns", "Pacific/Kiritimati" }
    local instants = {}
    for _, s in ipairs({ "1900-01-01T00:00Z", "1970-01-01T00:00Z", "2000-06-15T12:00Z",
      "2026-03-29T00:59Z", "2026-03-29T01:00Z", "2026-10-25T00:59Z", "2026-10-25T01:00Z",
      "2026-03-08T06:59Z", "2026-03-08T07:00Z", "2026-11-01T05:59Z", "2026-11-01T06:00Z",
      "2037-12-31T23:00Z", "2040-07-01T00:00Z", "2041-03-31T00:59Z", "2041-03-31T01:00Z",
      "2099-01-15T00:00Z", "2099-07-15T00:00Z" }) do
      instants[#instants + 1] = utc(s)
    end
    local script = {}
    for _, z in ipairs(zones) do
      for _, t in ipairs(instants) do
        script[#script + 1] = ("TZ=%s date -d @%d +%%z"):format(z, t)
      end
    end
    local p = io.popen(table.concat(script, "; "))
    local i = 0
    for _, z in ipairs(zones) do
      for _, t in ipairs(instants) do
        i = i + 1
        local line = p:read("*l")
        local sign, hh, mm = line:match("^([+-])(%d%d)(%d%d)$")
        local want = (sign == "-" and -1 or 1) * (tonumber(hh) * 3600 + tonumber(mm) * 60)
        local got = core.tz_offset(z, t)
        -- glibc rounds local mean time offsets (before 1900-ish) to minutes for %z
        if math.abs(got - want) >= 60 then
          error(("%s at %s: dp %d, glibc %d"):format(z, iso(t), got, want))
        end
      end
    end
    p:close()
  end)
end)

describe("cron next fire times", function()
  it("steps, lists and names in UTC", function()
    assert.same({ "2026-04-01T10:15Z", "2026-04-01T10:30Z", "2026-04-01T10:45Z", "2026-04-01T11:00Z" },
      fires("*/15 * * * *", "UTC", "2026-04-01T10:07Z", 4))
    assert.same({ "2026-04-01T10:25Z", "2026-04-01T10:45Z", "2026-04-01T11:05Z" },
      fires("5/20 * * * *", "UTC", "2026-04-01T10:07Z", 3))
    -- strictly after: a time that matches is not its own next
    assert.same({ "2026-04-01T10:30Z" }, fires("*/15 * * * *", "UTC", "2026-04-01T10:15Z", 1))
    assert.same({ "2026-07-01T09:00Z", "2027-01-01T09:00Z" }, fires("0 9 1 jan,JUL *", "UTC", "2026-04-01T00:00Z", 2))
    -- weekdays by name; 2026-04-03 is a Friday
    assert.same({ "2026-04-03T06:00Z", "2026-04-06T06:00Z" }, fires("0 6 * * mon-fri", "UTC", "2026-04-02T07:00Z", 2))
    -- 7 and 0 are both Sunday; 2026-04-05 is a Sunday
    assert.same({ "2026-04-05T00:00Z" }, fires("0 0 * * 7", "UTC", "2026-04-01T00:00Z", 1))
    assert.same({ "2026-04-05T00:00Z" }, fires("0 0 * * 0", "UTC", "2026-04-01T00:00Z", 1))
  end)

  it("macros", function()
    assert.same({ "2026-04-01T11:00Z" }, fires("@hourly", "UTC", "2026-04-01T10:07Z", 1))
    assert.same({ "2026-04-02T00:00Z" }, fires("@daily", "UTC", "2026-04-01T10:07Z", 1))
    assert.same({ "2026-04-05T00:00Z" }, fires("@weekly", "UTC", "2026-04-01T10:07Z", 1))
    assert.same({ "2026-05-01T00:00Z" }, fires("@monthly", "UTC", "2026-04-01T10:07Z", 1))
    assert.same({ "2027-01-01T00:00Z" }, fires("@yearly", "UTC", "2026-04-01T10:07Z", 1))
  end)

  it("day of month OR day of week when both are restricted, AND when either starts with *", function()
    -- 2026-04-13 is a Monday (the 13th), 2026-04-17 a Friday
    assert.same({ "2026-04-13T00:00Z", "2026-04-17T00:00Z", "2026-04-24T00:00Z" },
      fires("0 0 13 * 5", "UTC", "2026-04-11T00:00Z", 3))
    -- */2 starts with *: odd days that are Fridays (April 2026 Fridays: 3, 10, 17, 24)
    assert.same({ "2026-04-17T00:00Z", "2026-05-01T00:00Z" }, fires("0 0 */2 * 5", "UTC", "2026-04-04T00:00Z", 2))
    -- * in day of week: the day-of-month field alone decides
    assert.same({ "2026-04-13T00:00Z" }, fires("0 0 13 * *", "UTC", "2026-04-11T00:00Z", 1))
  end)

  it("Feb 29 fires in leap years only, Feb 30 never", function()
    assert.same({ "2028-02-29T12:00Z", "2032-02-29T12:00Z" }, fires("0 12 29 2 *", "UTC", "2026-01-01T00:00Z", 2))
    local nxt, err = core.cron_next("0 0 30 2 *", "UTC", utc("2026-01-01T00:00Z"))
    assert.is_nil(nxt)
    assert.truthy(err:find("no time within 10 years", 1, true))
  end)

  it("Europe/Amsterdam spring forward 2026-03-29 (02:00 CET -> 03:00 CEST at 01:00Z)", function()
    -- 02:30 does not exist that day: it fires once at the first valid minute after it, 03:00 CEST
    assert.same({ "2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z" },
      fires("30 2 * * *", "Europe/Amsterdam", "2026-03-27T12:00Z", 3))
    -- every quarter hour: 02:00-02:45 are skipped and fire once, at 03:00 CEST
    assert.same({ "2026-03-29T00:45Z", "2026-03-29T01:00Z", "2026-03-29T01:15Z" },
      fires("*/15 * * * *", "Europe/Amsterdam", "2026-03-29T00:40Z", 3))
    -- a time after the gap is unaffected
    assert.same({ "2026-03-29T04:15Z" }, fires("15 6 * * *", "Europe/Amsterdam", "2026-03-28T12:00Z", 1))
  end)

  it("Europe/Amsterdam fall back 2026-10-25 (03:00 CEST -> 02:00 CET at 01:00Z)", function()
    -- 02:30 happens twice: it fires once, at the first (CEST) occurrence
    assert.same({ "2026-10-25T00:30Z", "2026-10-26T01:30Z" },
      fires("30 2 * * *", "Europe/Amsterdam", "2026-10-24T12:00Z", 2))
    -- every half hour: the repeated 02:00 and 02:30 (CET) do not fire again
    assert.same({ "2026-10-25T00:00Z", "2026-10-25T00:30Z", "2026-10-25T02:00Z", "2026-10-25T02:30Z" },
      fires("*/30 * * * *", "Europe/Amsterdam", "2026-10-24T23:45Z", 4))
    assert.same({ "2026-10-25T05:15Z" }, fires("15 6 * * *", "Europe/Amsterdam", "2026-10-24T12:00Z", 1))
  end)

  it("America/New_York 2026-03-08 (gap 02:00-03:00) and 2026-11-01 (01:00-02:00 twice)", function()
    assert.same({ "2026-03-07T07:30Z", "2026-03-08T07:00Z", "2026-03-09T06:30Z" },
      fires("30 2 * * *", "America/New_York", "2026-03-06T12:00Z", 3))
    assert.same({ "2026-11-01T05:30Z", "2026-11-02T06:30Z" },
      fires("30 1 * * *", "America/New_York", "2026-10-31T12:00Z", 2))
    -- hourly across the fall back: 01:00 EDT fires, 01:00 EST does not, 02:00 EST does
    assert.same({ "2026-11-01T05:00Z", "2026-11-01T07:00Z" },
      fires("0 * * * *", "America/New_York", "2026-11-01T04:30Z", 2))
  end)

  it("the previous slot, for catch-up after downtime", function()
    local prev = core.cron_prev("0 6 * * *", "Europe/Amsterdam", utc("2026-07-01T03:00Z"))
    assert.equal("2026-06-30T04:00Z", iso(prev))
    prev = core.cron_prev("0 6 * * *", "Europe/Amsterdam", utc("2026-07-01T04:00Z"))
    assert.equal("2026-07-01T04:00Z", iso(prev)) -- at or before
    prev = core.cron_prev("30 2 * * *", "Europe/Amsterdam", utc("2026-03-29T12:00Z"))
    assert.equal("2026-03-29T01:00Z", iso(prev)) -- the gap's slot, where it fired
  end)

  it("agrees with a brute-force scan on random expressions (zones without DST in the window)", function()
    math.randomseed(20261207)
    local function rand_field(lo, hi)
      local r = math.random(4)
      if r == 1 then return "*", nil end
      if r == 2 then
        local step = math.random(2, 7)
        local set = {}
        for v = lo, hi, step do set[v] = true end
        return "*/" .. step, set
      end
      if r == 3 then
        local a = math.random(lo, hi)
        local b = math.random(a, hi)
        local set = {}
        for v = a, b do set[v] = true end
        return a .. "-" .. b, set
      end
      local set, parts = {}, {}
      for _ = 1, math.random(1, 3) do
        local v = math.random(lo, hi)
        set[v] = true
        parts[#parts + 1] = tostring(v)
      end
      return table.concat(parts, ","), set
    end
    for _ = 1, 40 do
      local fm, sm = rand_field(0, 59)
      local fh, sh = rand_field(0, 23)
      local fd, sd = rand_field(1, 31)
      local fw, sw = rand_field(0, 6)
      local expr = table.concat({ fm, fh, fd, "*", fw }, " ")
      local zone = ({ "UTC", "Asia/Kolkata", "Asia/Tokyo" })[math.random(3)]
      local start = utc("2026-05-01T00:00Z") + math.random(0, 86400 * 20)
      local got = core.cron_next(expr, zone, start)
      local want
      local t = start - start % 60 + 60
      while t < start + 86400 * 62 do
        local w = t + core.tz_offset(zone, t)
        local wd = os.date("!*t", w)
        local dom = not sd or sd[wd.day]
        local dow = not sw or sw[wd.wday - 1]
        local day_ok
        if fd:sub(1, 1) == "*" or fw:sub(1, 1) == "*" then day_ok = dom and dow else day_ok = dom or dow end
        if day_ok and (not sh or sh[wd.hour]) and (not sm or sm[wd.min]) then
          want = t
          break
        end
        t = t + 60
      end
      assert.equal(want and iso(want), got and iso(got), expr .. " in " .. zone .. " after " .. iso(start))
    end
  end)
end)
