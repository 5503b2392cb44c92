"""Routing rules as an operator meets them: `handoffd -t` and SIGHUP with a handoff.route
rules file. A typo or an example routed elsewhere must fail the check or the reload, naming
the rules file's line or the example, and a failed reload keeps the running rules.
"""
import signal

from conftest import MINIMAL_CONFIG, run, write_config

CONFIG = MINIMAL_CONFIG.replace("listen", "routes = 'routes.lua',\n  listen")

RULES = """local route = require "handoff.route"
return {
  route.language("fr", route.queue("support-fr")),
  route.always(route.queue("general")),
  examples = {
    { name = "french", context = { language = "fr-CA" }, expect = { queue = "%s" } },
  },
}
"""


def check(tmp_path, rules):
    """Runs `handoffd -t` on CONFIG with RULES as routes.lua; returns the CompletedProcess."""
    (tmp_path / "routes.lua").write_text(rules)
    write_config(tmp_path, CONFIG)
    return run(["-t", "-c", "config.lua"], cwd=tmp_path)


def test_check_accepts_rules_whose_examples_pass(tmp_path):
    out = check(tmp_path, RULES % "support-fr")
    assert (out.returncode, out.stdout, out.stderr) == (0, "configuration ok\n", "")


def test_check_names_the_failing_example(tmp_path):
    out = check(tmp_path, RULES % "support-de")
    assert (out.returncode, out.stdout) == (1, "")
    assert "example 1 'french': want queue support-de, got support-fr" in out.stderr, out.stderr


def test_check_names_the_line_of_a_rules_typo(tmp_path):
    rules = RULES.replace('route.queue("general")', 'route.queue("general", { prio = 1 })')
    out = check(tmp_path, rules % "support-fr")
    assert out.returncode == 1
    assert "routes.lua:4: route.queue: unknown destination key 'prio'" in out.stderr, out.stderr


def test_check_rejects_a_destination_in_place_of_a_rule(tmp_path):
    out = check(tmp_path, 'local route = require "handoff.route"\nreturn { route.queue("general") }\n')
    assert out.returncode == 1
    assert "rule 1 is a table, not a rule built with handoff.route" in out.stderr, out.stderr


def test_reload_with_a_failing_example_keeps_the_running_rules(daemon, tmp_path):
    (tmp_path / "routes.lua").write_text(RULES % "support-fr")
    d = daemon(CONFIG)
    mark = len(d.lines)
    (tmp_path / "routes.lua").write_text(RULES % "general")
    d.signal(signal.SIGHUP)
    line = d.wait_line("reload.failed", start=mark)
    assert "example 1 'french': want queue general, got support-fr" in line, line
    assert "kept_generation=1" in line, line

    (tmp_path / "routes.lua").write_text(RULES % "support-fr")
    d.signal(signal.SIGHUP)
    d.wait_line("reload.ok generation=2", start=mark)
    assert d.proc.poll() is None
