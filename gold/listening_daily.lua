-- listening_daily: minutes of music per day (plays of at least 30 s) and the streak of
-- consecutive days with music up to that day (Lua rows model: a running streak is awkward in SQL).
local function day_number(s)
  local y, m, d = s:match("^(%d+)-(%d+)-(%d+)$")
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m <= 2 then y, m = y - 1, m + 12 end
  return math.floor(365.25 * (y + 4716)) + math.floor(30.6001 * (m + 1)) + d
end

return {
  description = "Minutes listened per day and the running streak of days with music",
  batch_size = 200,
  rows = function(ctx)
    local streak, prev = 0, nil
    local sql = "SELECT (played_at AT TIME ZONE 'UTC')::date::text AS day, sum(ms_played) AS ms, count(*) AS plays"
      .. " FROM " .. ctx:ref("listening.streams") .. " WHERE ms_played >= $1 GROUP BY 1 ORDER BY 1"
    for r in ctx:query(sql, { 30000 }) do
      local n = day_number(r.day)
      streak = (prev and n == prev + 1) and streak + 1 or 1
      prev = n
      ctx:emit({ day = r.day, minutes = string.format("%.1f", tonumber(r.ms) / 60000),
        plays = tonumber(r.plays), streak_days = streak })
    end
  end,
}
