-- dp.csv: the one CSV (RFC 4180) reader, used by the file connector (streamed from an inbox file)
-- and by dp.infer (a sample's text); scripts may require it. The header is a row like any other.
--
--   csv.rows(next_chunk, { delimiter = ",", quote = '"', fail = function(line, msg) ... end },
--            function(fields, quoted, line) ... end)   -- return false to stop early
--
-- next_chunk() returns the next block of bytes or nil at the end (a UTF-8 byte-order mark at the
-- start is skipped). Quoted fields may hold the delimiter, the quote doubled, and line breaks
-- (kept exactly); quoted[i] says whether field i was quoted (an empty unquoted field is how
-- null is written). Blank lines are skipped; \r\n and \n both end a row. fail(line, msg) must
-- raise: a quote inside an unquoted field, text after a closing quote, or the end of the input
-- inside quotes.
local M = {}

local BOM = "\239\187\191"

function M.rows(next_chunk, opts, on_row)
  local delim, qc, fail = opts.delimiter or ",", opts.quote or '"', opts.fail
  local stop = "[" .. (delim .. "\r\n" .. qc):gsub("%W", "%%%0") .. "]"
  local buf, pos, eof, first = "", 1, false, true
  local line = 1 -- line where the current record starts

  local function fill()
    local c = next_chunk()
    if c == nil then eof = true return false end
    if first then
      first = false
      if c:sub(1, 3) == BOM then c = c:sub(4) end
    end
    buf = buf:sub(pos) .. c
    pos = 1
    return true
  end

  -- One record from pos: fields, quoted flags, line breaks inside; or nil when more data is
  -- needed to finish it.
  local function parse()
    local fields, quoted, nl = {}, {}, 0
    local i, n = pos, #buf
    while true do
      local f = #fields + 1
      local c
      if buf:sub(i, i) == qc then
        local parts, k = {}, i + 1
        while true do
          local j = buf:find(qc, k, true)
          if not j then
            if not eof then return nil end
            fail(line, "the file ends inside the quoted field " .. f .. " that starts on this line")
          end
          if j == n and not eof then return nil end -- a quote at the end: "" or the closing one?
          parts[#parts + 1] = buf:sub(k, j - 1)
          if buf:sub(j + 1, j + 1) == qc then
            parts[#parts + 1] = qc
            k = j + 2
          else
            k = j + 1
            break
          end
        end
        local v = table.concat(parts)
        for _ in v:gmatch("\n") do nl = nl + 1 end
        fields[f], quoted[f] = v, true
        i = k
        c = buf:sub(i, i)
        if c == "" and not eof then return nil end
        if c ~= "" and c ~= delim and c ~= "\n" and c ~= "\r" then
          fail(line + nl, "text after the closing quote of field " .. f
            .. " (write a quote inside a quoted field as " .. qc .. qc .. ")")
        end
      else
        local j = buf:find(stop, i)
        if not j then
          if not eof then return nil end
          j = n + 1
        end
        c = buf:sub(j, j)
        if c == qc then
          fail(line + nl, "a quote inside the unquoted field " .. f
            .. " (quote the whole field, and write the quote as " .. qc .. qc .. ")")
        end
        fields[f] = buf:sub(i, j - 1)
        i = j
      end
      if c == delim then
        i = i + 1
      elseif c == "\r" then
        if i == n and not eof then return nil end -- "\r\n" split between chunks?
        i = i + (buf:sub(i + 1, i + 1) == "\n" and 2 or 1)
        pos = i
        return fields, quoted, nl + 1
      elseif c == "\n" then
        pos = i + 1
        return fields, quoted, nl + 1
      else -- end of the file
        pos = i
        return fields, quoted, nl
      end
    end
  end

  fill()
  while true do
    if pos > #buf and not fill() then break end
    local fields, quoted, nl = parse()
    if not fields then
      fill()
    else
      local at = line
      line = line + nl
      local blank = #fields == 1 and not quoted[1] and fields[1] == ""
      if not blank and on_row(fields, quoted, at) == false then return end
    end
  end
end

return M
