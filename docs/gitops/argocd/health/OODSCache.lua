-- Argo CD health check for OODSCache (steward.lsst.io/v1alpha1).
--
-- Source of truth: docs/gitops/argocd/health/OODSCache.lua in the Steward repository. The same
-- text is embedded in docs/gitops/argocd/resource-customizations.yaml; a test fails when they
-- differ. Written for Argo CD's default sandbox (gopher-lua, Lua 5.1 semantics, base and table
-- libraries only: no string or math library), and tested that way.
--
-- The operator reconciles OODSCache; until it first reports, Argo CD shows it
-- Progressing, "waiting for the operator to observe generation N". The script reads only what
-- every Steward operator writes (observedGeneration, the Ready and Degraded conditions): the
-- kind's own fields (files, bytes, pinned) are not read yet, and
-- tests/docs/test_gitops_health.py refuses a script that reads a status field no operator
-- writes.
--
-- Rules, first match wins:
--   Degraded=True for the current generation                       -> Degraded
--   no status, or status.observedGeneration < metadata.generation  -> Progressing
--   Ready=True                                                      -> Healthy
--   Ready=False, reason WaitingForTransferWindow                    -> Suspended
--   Ready=False, reason Observing                                   -> Healthy
--   otherwise                                                       -> Progressing

-- BEGIN steward-common: identical in the five Steward health checks (a test compares them)
local DIGITS = { [0] = "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" }

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

local hs = {}
local problem = degraded(obj, nil)
local waiting = unobserved(obj)
if problem ~= nil then
  hs.status = "Degraded"
  hs.message = describe(problem, "Degraded")
elseif waiting ~= nil then
  hs.status = "Progressing"
  hs.message = waiting
else
  hs.status, hs.message = from_ready(obj)
end
return hs
