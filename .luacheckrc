-- luacheck configuration (Debian's lua-check). `bash .ci/luacheck.sh` checks lua/, connectors/,
-- gold/ and spec/ with it and prints one result per file (a step of .ci/run).
std = "luajit"
-- the code is written to about 120 columns; a few lines run longer where breaking them reads worse
max_line_length = 160
max_string_line_length = false -- long SQL, JSON and messages stay on one line
files["spec"] = {
  std = "+busted",
  max_line_length = false, -- fixtures and expected output are kept whole
  -- specs take every result of a command (rc, out, err) and check the ones the case is about,
  -- throw values away into _, and fixture scripts keep the arguments of the shape they implement
  ignore = { "211", "212", "231", "311", "431", "111/_" },
}
-- deliberately broken fixtures: they exist to fail when the engine loads them
exclude_files = {
  "spec/fixtures/metadata/scripts/connectors/broken.lua",
}
