# Installs the example config and rules into etc/handoffd, each only when absent there:
# a reinstall must not overwrite an operator's edited config. Runs at install time, so
# `cmake --install --prefix P` puts them under P.
set(dir "${HANDOFFD_SYSCONFDIR}/handoffd")
if(NOT IS_ABSOLUTE "${dir}")
  set(dir "${CMAKE_INSTALL_PREFIX}/${dir}")
endif()
foreach(f config.lua routes.lua)
  if(EXISTS "$ENV{DESTDIR}${dir}/${f}")
    message(STATUS "Kept (exists): $ENV{DESTDIR}${dir}/${f}")
  else()
    file(INSTALL "${HANDOFFD_EXAMPLES}/${f}" DESTINATION "$ENV{DESTDIR}${dir}")
  endif()
endforeach()
