-- Argo CD health check for pruneforge.dev/PruneDistillJob (Lua 5.1, as Argo CD's gopher-lua).
-- It reads the kstatus conditions the operator writes:
--   status older than metadata.generation -> Progressing (the operator has not seen the change)
--   Stalled=True                          -> Degraded    (a stage failed after its retries, bad spec)
--   Ready=True                            -> Healthy     (every stage done, results in the status)
--   Reconciling=True                      -> Progressing (stages pending or running)
--   anything else                         -> Progressing (waiting for the operator)
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the pruneforge operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the pruneforge operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local stalled = condition(conditions, "Stalled")
local ready = condition(conditions, "Ready")
local reconciling = condition(conditions, "Reconciling")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "Ready")
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, "Waiting for the pruneforge operator")
return hs
