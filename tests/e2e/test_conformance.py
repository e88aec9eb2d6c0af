"""corral conformance: the gateway test kit, run against corral proxy (all pass) and against gateways that do not
enforce (the kit must notice)."""

import subprocess

from conftest import BIN_DIR

CORRAL = BIN_DIR / "corral"
SCENARIOS = ["rate-limit", "hidden-tool", "default-deny", "argument-conditions", "batch", "malformed-params", "duplicate-keys",
             "passthrough", "approval-replay", "header-mismatch", "tasks-bypass"]
LEGACY_ONLY = {"batch"}
MODERN_ONLY = {"approval-replay", "header-mismatch", "tasks-bypass"}
HTTP_ONLY = {"header-mismatch"}


def conformance(gateway, *extra):
    return subprocess.run([str(CORRAL), "conformance", "--gateway", gateway, "--timeout", "10", *extra],
                          capture_output=True, text=True, timeout=180)


def rows(output):
    """{(scenario, era): PASS|FAIL}"""
    return {(line.split()[0], line.split()[1]): line.split()[2]
            for line in output.splitlines()[1:] if line.split() and line.split()[0] in SCENARIOS}


def expected(http=False):
    return {(name, era) for name in SCENARIOS for era in ("legacy", "modern")
            if not (era == "modern" and name in LEGACY_ONLY) and not (era == "legacy" and name in MODERN_ONLY)
            and (http or name not in HTTP_ONLY)}


def test_corral_proxy_passes_every_scenario():
    done = conformance(f"{CORRAL} proxy --policy {{policy}} -- {{server}}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == {key: "PASS" for key in expected()}
    assert "17 of 17 scenarios passed" in done.stdout


def test_no_gateway_fails_the_enforcement_scenarios():
    done = conformance("{server}")
    assert done.returncode == 1, done.stdout
    result = rows(done.stdout)
    assert set(result) == expected()
    assert result.pop(("passthrough", "legacy")) == "PASS" and result.pop(("passthrough", "modern")) == "PASS"
    assert set(result.values()) == {"FAIL"}, done.stdout


def test_a_dry_run_proxy_is_caught_forwarding():
    done = conformance(f"{CORRAL} proxy --dry-run --policy {{policy}} -- {{server}}", "--scenario", "hidden-tool",
                       "--scenario", "rate-limit")
    assert done.returncode == 1
    assert rows(done.stdout) == {(name, era): "FAIL" for name in ("hidden-tool", "rate-limit") for era in ("legacy", "modern")}
    assert "cancel_background_task" in done.stdout


def test_bad_invocations_are_explained():
    done = subprocess.run([str(CORRAL), "conformance", "--gateway", "cat"], capture_output=True, text=True)
    assert done.returncode != 0 and "{server}" in done.stderr
    done = subprocess.run([str(CORRAL), "conformance", "--gateway", "{server}", "--scenario", "nope"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "unknown scenario nope" in done.stderr
    listed = subprocess.run([str(CORRAL), "conformance", "--list"], capture_output=True, text=True)
    assert listed.returncode == 0 and all(name in listed.stdout for name in SCENARIOS)


def test_corral_proxy_over_http_passes_in_both_eras():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    picked = ["rate-limit", "hidden-tool", "approval-replay", "header-mismatch", "duplicate-keys", "tasks-bypass"]
    done = conformance(f"{CORRAL} proxy --http 127.0.0.1:{port} --policy {{policy}} -- {{server}}",
                       "--gateway-url", f"http://127.0.0.1:{port}/mcp", *[arg for name in picked for arg in ("--scenario", name)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == {key: "PASS" for key in expected(http=True) if key[0] in picked}


def test_era_and_url_are_checked():
    done = subprocess.run([str(CORRAL), "conformance", "--gateway", "{server}", "--era", "2026"], capture_output=True, text=True)
    assert done.returncode != 0 and "--era is legacy, modern or both" in done.stderr
    done = subprocess.run([str(CORRAL), "conformance", "--gateway", "{server}", "--gateway-url", "ftp://x"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "--gateway-url wants an http(s) URL" in done.stderr
