local hs = {}
local status = obj.status
if status == nil or status.observedGeneration == nil
    or obj.metadata.generation ~= status.observedGeneration then
  hs.status = "Progressing"
  hs.message = "waiting for modelpilot to observe the latest spec"
  return hs
end

-- Nothing serves and a failure worth retrying has lasted past spec.progressDeadline: still retried,
-- but someone should look, as with a Deployment past its own deadline.
local function deadlineExceeded()
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Progressing" and condition.status == "False"
        and condition.reason == "ProgressDeadlineExceeded" then
      return condition
    end
  end
  return nil
end

local phase = status.phase
local rollout = status.rollout
local stuck = nil
if phase == "Pending" or phase == "Progressing" then
  stuck = deadlineExceeded()
end
hs.message = status.message
if stuck ~= nil then
  hs.status = "Degraded"
  hs.message = stuck.message
elseif rollout ~= nil and rollout.phase == "Paused" then
  -- A canary holding at a pause step or a pause request: waiting for time or for a person.
  hs.status = "Suspended"
elseif phase == "Ready" then
  hs.status = "Healthy"
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
