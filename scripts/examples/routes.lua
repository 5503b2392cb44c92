-- Example routing rules: a function from the handoff object to a destination.
return function(h)
  local ctx = h.context
  if ctx.language and ctx.language:lower():sub(1, 2) == "fr" then
    return { queue = "support-fr" }
  end
  if ctx.vars["Global.CustomerTier"] == "gold" then
    return { queue = "vip", priority = 1 }
  end
  return { queue = "general" }
end
