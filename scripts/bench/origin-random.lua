-- wrk script: GET /items/k<N> for a random N in [0, keys), the same URLs the
-- warming service fetches in scripts/bench-warm.sh.
-- Usage: wrk -s scripts/bench/origin-random.lua http://127.0.0.1:18080 -- <keys>
local keys = 100000

function init(args)
  if args[1] ~= nil then keys = tonumber(args[1]) end
  -- Each wrk thread has its own Lua state: seed each one differently.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  return wrk.format("GET", "/items/k" .. math.random(0, keys - 1))
end

-- No response() hook: it would slow wrk down; wrk itself reports
-- "Non-2xx or 3xx responses", which bench-warm.sh checks.
