-- spec/prefect_helpers.lua: what the Prefect specs (spec/04-prefect) share. The server is real
-- (spec/prefect.sh starts it once per test run and passes DP_SPEC_PREFECT_*); nothing here mocks.
local H = require "helpers"
local cjson = H.cjson

local P = {}

P.url = os.getenv("DP_SPEC_PREFECT_URL")
P.auth = os.getenv("DP_SPEC_PREFECT_AUTH")
P.pid = os.getenv("DP_SPEC_PREFECT_PID")
P.venv = os.getenv("DP_SPEC_PREFECT_VENV")
if not P.url or not P.auth or not P.pid then
  error("DP_SPEC_PREFECT_URL / _AUTH / _PID are not set: run these specs with spec/prefect.sh", 2)
end

-- The environment a reporting engine gets: the spec's DP_* plus Prefect's, with overrides
-- (false removes a variable).
function P.env(env, extra)
  local e = {}
  for k, v in pairs(env) do e[k] = v end
  e.PREFECT_API_URL = P.url
  e.PREFECT_API_AUTH_STRING = P.auth
  for k, v in pairs(extra or {}) do e[k] = v or nil end
  return e
end

local function env_cmd(e)
  local parts = { "env", "-u", "PREFECT_API_URL", "-u", "PREFECT_API_AUTH_STRING", "-u", "PREFECT_API_KEY",
    "-u", "PREFECT__FLOW_RUN_ID" }
  for k, v in pairs(e) do parts[#parts + 1] = k .. "=" .. H.sh_quote(v) end
  return table.concat(parts, " ")
end
P.env_cmd = env_cmd

-- Runs the engine with the full environment e; returns exit code, stdout, stderr, seconds.
function P.engine(e, ...)
  local parts = { env_cmd(e), H.sh_quote(H.bin) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.sh_quote(a) end
  local errfile = os.tmpname()
  local t0 = H.core.monotonic()
  local rc, out = H.sh(table.concat(parts, " ") .. " 2>" .. H.sh_quote(errfile))
  local dt = H.core.monotonic() - t0
  local err = H.read_file(errfile)
  os.remove(errfile)
  return rc, out, err, dt
end

-- As H.engine_killed_at, with the full environment e (Prefect's variables too).
function P.engine_killed_at(e, point, ...)
  local marker = os.tmpname()
  os.remove(marker)
  local parts = { env_cmd(e), "DP_TEST_PAUSE=" .. point, "DP_TEST_PAUSE_FILE=" .. H.sh_quote(marker), H.sh_quote(H.bin) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.sh_quote(a) end
  local cmd = table.concat(parts, " ") .. " >/dev/null 2>&1 & pid=$!; "
    .. "for i in $(seq 1 300); do [ -s " .. H.sh_quote(marker) .. " ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done; "
    .. "if [ -s " .. H.sh_quote(marker) .. " ]; then sleep 1; kill -9 $pid; wait $pid 2>/dev/null; echo killed; "
    .. "else wait $pid 2>/dev/null; echo ended; fi"
  local _, out = H.sh("(" .. cmd .. ") 2>/dev/null")
  os.remove(marker)
  return out:match("killed") ~= nil
end

-- One call of the Prefect REST API (with the server's auth); returns the decoded body and the
-- HTTP status.
function P.api(method, path, body)
  local bodyfile = os.tmpname()
  H.write_file(bodyfile, body and cjson.encode(body) or "")
  local cmd = "curl -sS -u " .. H.sh_quote(P.auth) .. " -X " .. method .. " -H 'Content-Type: application/json'"
    .. (body and (" --data-binary @" .. H.sh_quote(bodyfile)) or "")
    .. " -w '\\n%{http_code}' " .. H.sh_quote(P.url .. path)
  local _, out = H.sh(cmd)
  os.remove(bodyfile)
  local text, code = out:match("^(.*)\n(%d+)%s*$")
  local ok, decoded = pcall(cjson.decode, text or "")
  return ok and decoded or text, tonumber(code)
end

function P.flow_run(id)
  local r, code = P.api("GET", "/flow_runs/" .. id)
  if code ~= 200 then return nil, code end
  return r
end

-- The flow run's task runs by name ("accounts/raw" = {state_type, message, id, upstream}).
function P.task_runs(flow_run_id)
  local list = P.api("POST", "/task_runs/filter", { flow_runs = { id = { any_ = { flow_run_id } } } })
  local out, byid = {}, {}
  for _, t in ipairs(list) do byid[t.id] = t.name end
  for _, t in ipairs(list) do
    local up = t.task_inputs and t.task_inputs.upstream
    out[t.name] = { state = t.state_type, message = t.state and t.state.message, id = t.id,
      upstream = up and up[1] and byid[up[1].id] or nil }
  end
  return out
end

function P.logs(flow_run_id)
  return P.api("POST", "/logs/filter", { logs = { flow_run_id = { any_ = { flow_run_id } } }, sort = "TIMESTAMP_ASC" })
end

-- Stops (SIGSTOP: it hangs, connections time out) and resumes the server.
function P.freeze() assert(H.sh("kill -STOP " .. P.pid) == 0) end
function P.thaw() assert(H.sh("kill -CONT " .. P.pid) == 0) end

-- Waits until pred() returns a true value (at most secs); returns it.
function P.wait_for(secs, pred)
  local t0 = H.core.monotonic()
  while H.core.monotonic() - t0 < secs do
    local v = pred()
    if v then return v end
    H.sh("sleep 0.5")
  end
  return pred()
end

return P
