-- Example handoffd config: plain Lua returning a table. Relative paths are relative to
-- this file. Secrets come from the environment, never from the file. The README's demo
-- runs the daemon on this file against the test Direct Line emulator and a fake hub.
local env = os.getenv

return {
  listen = env("HANDOFFD_LISTEN") or "127.0.0.1:8088",
  log_level = "info",
  shutdown_timeout = 10,                    -- seconds to finish in-flight work on SIGTERM
  state = "sqlite:" .. (env("HANDOFFD_STATE_DIR") or "/var/lib/handoffd") .. "/state.db",
  -- or in PostgreSQL (the password from the environment, PGPASSWORD or ~/.pgpass):
  -- state = "postgresql://handoffd@db.example:5432/handoffd",

  directline = {
    base = env("DIRECTLINE_BASE") or "https://directline.botframework.com/v3/directline",
    secret = env("DIRECTLINE_SECRET") or "replace-with-your-direct-line-secret",
    transport = "websocket",
  },

  hub = {
    module = "hubs.webhook",                -- scripts/hubs/webhook.lua: the generic contract
    url = env("HUB_URL") or "https://hub.example/handoffd",
    secret = env("HUB_SECRET") or "replace-with-a-long-random-shared-secret",
    token = env("HUB_TOKEN"),
  },

  routes = "routes.lua",                    -- reloaded on SIGHUP without dropping a conversation
  fallback = { queue = "general" },         -- where a handoff goes when the rules cannot decide
}
