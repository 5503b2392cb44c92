rockspec_format = "3.0"
package = "handoffd"
version = "scm-1"
source = {
   url = "git+https://example.invalid/handoffd.git",
}
description = {
   summary = "Lua-scriptable adapter between Direct Line 3.0 bots and customer-engagement hubs",
   detailed = [[
handoffd relays chats between an engagement hub and a Copilot Studio / Azure Bot Service bot
over Direct Line 3.0, catches the bot's handoff.initiate event, routes it with Lua rules and
hands the conversation to a human agent through the hub's API, with context and transcript.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
-- A check before the build; CMake's pkg-config finds the rest (libcurl's header sits in
-- Debian's multiarch include directory, where LuaRocks does not look).
external_dependencies = {
   LIBEVENT = { header = "event2/event.h" },
   WSLAY = { header = "wslay/wslay.h" },
   SQLITE = { header = "sqlite3.h" },
   LIBSYSTEMD = { header = "systemd/sd-daemon.h" },
}
build = {
   type = "cmake",
   variables = {
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      CMAKE_BUILD_TYPE = "Release",
      HANDOFFD_TESTS = "OFF",
      -- LuaRocks would take lib/systemd for Lua C modules: keep the unit with the scripts.
      HANDOFFD_SYSTEMD_UNIT_DIR = "share/handoffd/dist",
   },
}
