-- Argo CD health check for RetentionPolicy (steward.lsst.io/v1alpha1).
--
-- Source of truth: docs/gitops/argocd/health/RetentionPolicy.lua in the Steward repository. The
-- same text is embedded in docs/gitops/argocd/resource-customizations.yaml; a test fails when
-- they differ. Written for Argo CD's default sandbox (gopher-lua, Lua 5.1 semantics, base and
-- table libraries only: no string or math library), and tested that way.
--
-- Rules, first match wins:
--   Degraded=True for the current generation                       -> Degraded
--   no status, or status.observedGeneration < metadata.generation  -> Progressing
--   status.mode Blocked (a protection or maxDeleteBytes refused)    -> Degraded, with the plan
--   status.mode DryRun                                              -> Healthy, with the plan
--   Ready=True                                                      -> Healthy
--   Ready=False, reason WaitingForTransferWindow                    -> Suspended
--   Ready=False, reason Observing                                   -> Healthy
--   otherwise                                                       -> Progressing
-- The plan (what would expire, how many bytes, what is protected) is in the message of a dry
-- run and of a blocked run, so the Argo CD UI shows it before anything is deleted.

-- BEGIN steward-common: identical in the five Steward health checks (a test compares them)
local DIGITS = { [0] = "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" }
local UNITS = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" }

-- Decimal text of a whole number. Argo CD's sandbox has no string library, and tostring()
-- writes 3.0 as "3.0" in Lua 5.3 and later, so digits are looked up one by one.
local function int(n)
  if type(n) ~= "number" then
    return tostring(n)
  end
  local sign = ""
  if n < 0 then
    sign = "-"
    n = -n
  end
  n = n - n % 1
  if n == 0 then
    return "0"
  end
  local text = ""
  while n >= 1 do
    local digit = n % 10
    text = DIGITS[digit] .. text
    n = (n - digit) / 10
  end
  return sign .. text
end

local function plural(n, noun)
  if n == 1 then
    return "1 " .. noun
  end
  return int(n) .. " " .. noun .. "s"
end

-- Bytes in binary units with one decimal: 1649267441664 -> "1.5 TiB".
local function size(bytes)
  if type(bytes) ~= "number" then
    return "0 B"
  end
  local unit = 1
  while bytes >= 1024 and unit < #UNITS do
    bytes = bytes / 1024
    unit = unit + 1
  end
  if unit == 1 then
    return int(bytes) .. " B"
  end
  local tenths = bytes * 10 + 0.5
  tenths = tenths - tenths % 1
  return int((tenths - tenths % 10) / 10) .. "." .. int(tenths % 10) .. " " .. UNITS[unit]
end

-- "key=value, ..." of a map of counts, keys sorted.
local function listing(map)
  if type(map) ~= "table" then
    return ""
  end
  local keys = {}
  for key in pairs(map) do
    keys[#keys + 1] = tostring(key)
  end
  table.sort(keys)
  local parts = {}
  for _, key in ipairs(keys) do
    parts[#parts + 1] = key .. "=" .. int(map[key])
  end
  return table.concat(parts, ", ")
end

local function find(status, kind)
  if type(status) ~= "table" or type(status.conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if type(condition) == "table" and condition.type == kind then
      return condition
    end
  end
  return nil
end

-- "Reason: message" of a condition.
local function describe(condition, fallback)
  local text = ""
  if type(condition) == "table" then
    if type(condition.reason) == "string" then
      text = condition.reason
    end
    if type(condition.message) == "string" and condition.message ~= "" then
      if text ~= "" then
        text = text .. ": "
      end
      text = text .. condition.message
    end
  end
  if text == "" then
    return fallback
  end
  return text
end

local function generation_of(obj)
  if type(obj.metadata) == "table" and type(obj.metadata.generation) == "number" then
    return obj.metadata.generation
  end
  return nil
end

-- Why the status cannot be trusted yet (the operator has not seen the current spec), or nil.
local function unobserved(obj)
  local generation = generation_of(obj)
  if generation == nil then
    if type(obj.status) ~= "table" then
      return "waiting for the operator to report status"
    end
    return nil
  end
  local waiting = "waiting for the operator to observe generation " .. int(generation)
  if type(obj.status) ~= "table" or type(obj.status.observedGeneration) ~= "number" then
    return waiting
  end
  if obj.status.observedGeneration < generation then
    return waiting .. " (status is from generation " .. int(obj.status.observedGeneration) .. ")"
  end
  return nil
end

-- The Degraded=True condition computed from the current generation, unless its reason is
-- ignored_reason. A condition's own observedGeneration counts: the operator writes Degraded
-- (InvalidSpec, Refused, RucioUnavailable) for a new generation without a full status.
local function degraded(obj, ignored_reason)
  local condition = find(obj.status, "Degraded")
  if condition == nil or condition.status ~= "True" then
    return nil
  end
  if ignored_reason ~= nil and condition.reason == ignored_reason then
    return nil
  end
  local generation = generation_of(obj)
  local observed = condition.observedGeneration
  if type(observed) ~= "number" then
    observed = obj.status.observedGeneration
  end
  if generation ~= nil and (type(observed) ~= "number" or observed < generation) then
    return nil
  end
  return condition
end

-- Health from the Ready condition, once the spec is observed and nothing is Degraded.
local function from_ready(obj)
  local ready = find(obj.status, "Ready")
  if ready == nil then
    return "Progressing", "waiting for the Ready condition"
  end
  if ready.status == "True" then
    return "Healthy", describe(ready, "Ready")
  end
  if ready.reason == "WaitingForTransferWindow" then
    return "Suspended", describe(ready, "waiting for the transfer window")
  end
  if ready.reason == "Observing" then
    return "Healthy", describe(ready, "Observing")
  end
  return "Progressing", describe(ready, "not Ready yet")
end
-- END steward-common

local function plan_text(status)
  local plan = status.plan
  if type(plan) ~= "table" then
    plan = {}
  end
  local text = "would expire " .. plural(plan.wouldExpire or 0, "DID")
    .. " (" .. size(plan.bytes) .. ")"
  local protected = listing(plan.protected)
  if protected ~= "" then
    text = text .. "; protected: " .. protected
  end
  return text
end

local hs = {}
local problem = degraded(obj, nil)
local waiting = unobserved(obj)
if problem ~= nil then
  hs.status = "Degraded"
  hs.message = describe(problem, "Degraded")
elseif waiting ~= nil then
  hs.status = "Progressing"
  hs.message = waiting
elseif obj.status.mode == "Blocked" then
  local ready = find(obj.status, "Ready")
  hs.status = "Degraded"
  hs.message = "blocked, nothing expired or deleted: " .. describe(ready, "see status.conditions")
    .. "; plan: " .. plan_text(obj.status)
elseif obj.status.mode == "DryRun" then
  hs.status = "Healthy"
  hs.message = "dry run: " .. plan_text(obj.status)
else
  hs.status, hs.message = from_ready(obj)
end
return hs
