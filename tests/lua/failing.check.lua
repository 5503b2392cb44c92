-- Not a test of the suite: tests/integration/test_daemon.py runs it to prove that
-- `handoffd test` reports a failing test and exits non-zero.
return {
  passes = function() end,
  fails = function() error("expected failure") end,
}
