-- Example handoffd config: plain Lua returning a table. Relative paths are relative to
-- this file. Secrets come from the environment, never from the file.
return {
  listen = os.getenv("HANDOFFD_LISTEN") or "127.0.0.1:8088",
  log_level = "info",
  shutdown_timeout = 10,                    -- seconds to finish in-flight work on SIGTERM

  directline = {
    base = os.getenv("DIRECTLINE_BASE") or "https://directline.botframework.com/v3/directline",
    secret = os.getenv("DIRECTLINE_SECRET") or "replace-with-your-direct-line-secret",
    transport = "websocket",
  },

  routes = "routes.lua",                    -- reloaded on SIGHUP without dropping a conversation
}
