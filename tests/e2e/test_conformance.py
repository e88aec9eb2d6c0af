"""corral conformance: the gateway test kit, run against corral proxy (all pass) and against gateways that do not
enforce (the kit must notice)."""

import subprocess

from conftest import BIN_DIR

CORRAL = BIN_DIR / "corral"
SCENARIOS = ["rate-limit", "hidden-tool", "default-deny", "argument-conditions", "batch", "malformed-params", "duplicate-keys",
             "passthrough"]


def conformance(gateway, *extra):
    return subprocess.run([str(CORRAL), "conformance", "--gateway", gateway, "--timeout", "10", *extra],
                          capture_output=True, text=True, timeout=180)


def rows(output):
    return {line.split()[0]: line.split()[1] for line in output.splitlines()[1:] if line.split() and line.split()[0] in SCENARIOS}


def test_corral_proxy_passes_every_scenario():
    done = conformance(f"{CORRAL} proxy --policy {{policy}} -- {{server}}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == {name: "PASS" for name in SCENARIOS}
    assert "8 of 8 scenarios passed" in done.stdout


def test_no_gateway_fails_the_enforcement_scenarios():
    done = conformance("{server}")
    assert done.returncode == 1, done.stdout
    result = rows(done.stdout)
    assert result.pop("passthrough") == "PASS"
    assert set(result.values()) == {"FAIL"}, done.stdout


def test_a_dry_run_proxy_is_caught_forwarding():
    done = conformance(f"{CORRAL} proxy --dry-run --policy {{policy}} -- {{server}}", "--scenario", "hidden-tool",
                       "--scenario", "rate-limit")
    assert done.returncode == 1
    assert rows(done.stdout) == {"hidden-tool": "FAIL", "rate-limit": "FAIL"}
    assert "cancel_background_task" in done.stdout


def test_bad_invocations_are_explained():
    done = subprocess.run([str(CORRAL), "conformance", "--gateway", "cat"], capture_output=True, text=True)
    assert done.returncode != 0 and "{server}" in done.stderr
    done = subprocess.run([str(CORRAL), "conformance", "--gateway", "{server}", "--scenario", "nope"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "unknown scenario nope" in done.stderr
    listed = subprocess.run([str(CORRAL), "conformance", "--list"], capture_output=True, text=True)
    assert listed.returncode == 0 and all(name in listed.stdout for name in SCENARIOS)
