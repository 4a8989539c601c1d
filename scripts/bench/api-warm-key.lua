-- wrk script: POST /warm/key {"keys": ["bench:<random 1..1000>"]} with a JSON
-- content type, as scripts/bench-api.sh runs it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  local body = '{"keys":["bench:' .. math.random(1, 1000) .. '"]}'
  return wrk.format(nil, "/warm/key", nil, body)
end

-- Status codes other than 200 are counted by wrk as "Non-2xx or 3xx responses".
