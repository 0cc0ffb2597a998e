hs = {}
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.metadata.generation ~= obj.status.observedGeneration then
  hs.status = "Progressing"
  hs.message = "waiting for modelpilot to observe the latest spec"
  return hs
end
local phase = obj.status.phase
local rollout = obj.status.rollout
if rollout ~= nil and rollout.phase == "Paused" then
  -- A canary holding at a pause step or a pause request: waiting for time or for a person.
  hs.status = "Suspended"
elseif phase == "Ready" then
  hs.status = "Healthy"
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = obj.status.message
return hs
