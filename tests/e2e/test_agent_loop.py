"""The README's agent loop (Examples/AgentLoop) is the file that is built, and it runs end to end."""

import re
import subprocess

from conftest import BIN_DIR, MOCK, ROOT


def test_readme_shows_the_example_that_is_built():
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "Examples" / "AgentLoop" / "main.swift").read_text()
    assert source in readme
    assert len(source.splitlines()) < 40


def test_the_agent_loop_runs_against_allcanuse_mock():
    done = subprocess.run([str(BIN_DIR / "agent-loop"), str(MOCK)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "cancel_background_task" not in out.splitlines()[0]  # hidden from the tool list
    for step in ["create_background_task", "wait_for_background_task", "get_task_output", "append_task_event"]:
        assert re.search(rf"^ok {step} → ", out, re.M), out
    assert '"condition_met":true' in out
    assert "approval asked: Events are visible to the team → yes" in out
    assert re.search(r"^denied cancel_background_task → \[POLICY DENIED\] .*hidden by policy", out, re.M)
    assert "audit: append_task_event approval_required" in out and "audit: cancel_background_task deny (hide)" in out
