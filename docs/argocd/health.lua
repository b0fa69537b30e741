-- Argo CD health check for optiserve.io/OptimizedModel.
--
-- Argo CD runs this with the live object in the global `obj` (gopher-lua, Lua 5.1, no os/io
-- libraries) and reads the returned table: Healthy, Progressing or Degraded, with a message.
-- It reads what the operator writes (operator/optiserve_operator/conditions.py):
--   * a status for an older spec is not news about this one: Progressing until
--     status.observedGeneration (and the Ready condition's) catches up with metadata.generation;
--   * Stalled=True, Degraded=True or phase Failed: Degraded (a failed optimization Job, a
--     rollout past its deadline, a rollback to the last good artifact);
--   * Ready=True: Healthy;
--   * anything else (Pending, Optimizing, Deploying, no status yet): Progressing.
local hs = {}

local function condition(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the optiserve operator to observe the OptimizedModel"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
local conditions = status.conditions
local phase = status.phase or "Pending"

if generation ~= nil then
  local observed = status.observedGeneration
  if observed == nil or observed < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
      " (status is for " .. tostring(observed or 0) .. ")"
    return hs
  end
end

local stalled = condition(conditions, "Stalled")
local degraded = condition(conditions, "Degraded")
if is_true(stalled) or is_true(degraded) or phase == "Failed" then
  hs.status = "Degraded"
  local c = degraded
  if not is_true(c) then
    c = stalled
  end
  hs.message = say(c, "OptimizedModel failed (phase " .. phase .. ")")
  return hs
end

local ready = condition(conditions, "Ready")
local ready_current = ready ~= nil and
  (generation == nil or ready.observedGeneration == nil or ready.observedGeneration >= generation)
if is_true(ready) and ready_current then
  hs.status = "Healthy"
  hs.message = say(ready, "Ready")
  if status.endpoint ~= nil then
    hs.message = hs.message .. " at " .. status.endpoint
  end
  return hs
end

hs.status = "Progressing"
hs.message = say(condition(conditions, "Progressing"), say(ready, "Phase " .. phase))
return hs
