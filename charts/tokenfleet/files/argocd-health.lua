-- Argo CD health check for tokenfleet resources (ImmersionPod, VehiclePool, InferenceJob).
-- kstatus semantics: a spec the controller has not seen yet, or Reconciling=True, is Progressing;
-- Stalled=True is Degraded; Ready=True is Healthy; Ready=False is Degraded (with its message),
-- except the normal not-ready states below (a pool with no eligible cars now, a cordon).
-- Install: argocd-cm `resource.customizations.health.tokenfleet.io_<Kind>: |` with this script.
local hs = {status = "Progressing", message = "Waiting for the tokenfleet operator"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Stalled" and condition.status == "True" then
      return {status = "Degraded", message = condition.message or condition.reason or "Stalled"}
    end
    if condition.type == "Reconciling" and condition.status == "True" then
      hs.message = condition.message or condition.reason or "Reconciling"
      return hs
    end
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready == nil or ready.status == "Unknown" then
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or ready.reason or "Ready"}
end
-- Not ready, but nothing is broken: a pool whose cars are all away or charging right now (the
-- daytime norm) or that has no cars yet is Healthy; a cordoned tank or pool (spec.cordoned: a
-- person's decision) is Suspended. Everything else not ready is Degraded.
if obj.kind == "VehiclePool" and (ready.reason == "NoEligibleVehicles" or ready.reason == "NoVehicles") then
  return {status = "Healthy", message = ready.message or ready.reason}
end
if ready.reason == "Cordoned" then
  return {status = "Suspended", message = ready.message or ready.reason}
end
return {status = "Degraded", message = ready.message or ready.reason or "Not ready"}
