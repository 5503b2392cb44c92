# Installs what goes under etc/: the logrotate snippet, and the example config and rules
# into etc/handoffd, each of those only when absent there (a reinstall must not overwrite
# an operator's edited config). Runs at install time, so `cmake --install --prefix P` puts
# them under P; file(INSTALL) adds DESTDIR itself. Like GNUInstallDirs, a /usr prefix puts
# them in /etc, where the unit looks.
set(etc "${HANDOFFD_SYSCONFDIR}")
if(NOT IS_ABSOLUTE "${etc}")
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(etc "/${etc}")
  else()
    set(etc "${CMAKE_INSTALL_PREFIX}/${etc}")
  endif()
endif()
file(INSTALL "${HANDOFFD_DIST}/logrotate" DESTINATION "${etc}/logrotate.d"
     RENAME handoffd)
foreach(f config.lua routes.lua)
  if(EXISTS "$ENV{DESTDIR}${etc}/handoffd/${f}")
    message(STATUS "Kept (exists): $ENV{DESTDIR}${etc}/handoffd/${f}")
  else()
    file(INSTALL "${HANDOFFD_EXAMPLES}/${f}" DESTINATION "${etc}/handoffd")
  endif()
endforeach()
