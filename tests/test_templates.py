"""Every step template, rendered over valid and hostile values, in both formats (templates/README.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kmsadmin.errors import TemplateError
from kmsadmin.lab import pwsh
from kmsadmin.render import CMD_FORBIDDEN, HEADER_RE, available_steps, render
from kmsadmin.values import ScriptFormat, ScriptRef, Secret

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
WINDOWS_APP = "55c92734-d682-4d71-983e-d6ec3f16059f"
OFFICE_APP = "0ff1ce15-a989-479d-af46-f275c6370663"
SLMGR = 'cscript //NoLogo "%SystemRoot%\\System32\\slmgr.vbs"'

#: A valid value for every parameter any step takes.
VALID: dict[str, Any] = {
    "include_tools": True,
    "rule_name": "SPPSVC-In-TCP",
    "profiles": "Domain,Private",
    "remote_addresses": "10.0.0.0/8,192.168.0.0/16",
    "product_key": "WX4NM-KYWYW-QJJR4-XV3QB-6VM33",
    "application_id": WINDOWS_APP,
    "activation_id": "",
    "force": False,
    "confirmation_id": "123456-234567-345678-456789-567890-678901-789012-890123",
    "listening_port": 1688,
    "dns_publishing": True,
    "low_priority": False,
    "activation_interval": 120,
    "renewal_interval": "",
    "kms_host": "kms1.contoso.com",
    "kms_port": 1688,
    "lookup_domain": "contoso.com",
    "enabled": True,
    "action": "add",
    "zone_name": "contoso.com",
    "record_name": "_vlmcs._tcp",
    "priority": 0,
    "weight": 0,
    "ttl": 3600,
    "kms_hosts_group": "",
    "domains": "contoso.com,branch.contoso.com",
    "clear": False,
    "activation_type": 1,
    "activation_object_name": "Contoso Windows Server 2022",
    "activation_object": "Contoso Windows Server 2022",
    "days": 30,
    "max_events": 5000,
    "timeout_ms": 2000,
}

HOSTILE = [
    "'; Remove-Item C:\\ -Recurse; '",
    "$(Stop-Computer)",
    "`$(Stop-Computer)`",
    "a`",
    '"; Stop-Computer; "',
    "line1\nline2",
    "line1\r\nline2\r\n",
    "\u2018; Stop-Computer; \u2019",
    "\u201a\u201b",
    "\u201c; Stop-Computer; \u201d",
    "#> Stop-Computer <#",
    "<# Stop-Computer",
    "@'\r\nStop-Computer\r\n'@",
    "'@\nStop-Computer\n@'",
    "${env:x}",
    ";",
    "| Stop-Computer",
    "\r\n# kmsadmin-body\r\nStop-Computer\r\n",
]


def readme_steps() -> dict[str, list[str]]:
    """The step table of templates/README.md: step → its parameters (Python names)."""
    text = (TEMPLATES / "README.md").read_text(encoding="utf-8")
    section = text.split("## Steps", 1)[1].split("\n### ", 1)[0]
    steps: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([a-z-]+)`", cells[0]) if len(cells) > 2 else None
        if match:
            steps[match[1]] = re.findall(r"`([a-z_]+)`", cells[1])
    return steps


STEPS = readme_steps()


def template_files(fmt: str) -> list[Path]:
    return sorted(p for p in (TEMPLATES / fmt).glob(f"*.{fmt}.j2") if not p.name.startswith("_"))


def partial_files(fmt: str) -> list[Path]:
    return sorted((TEMPLATES / fmt).glob(f"_*.{fmt}.j2"))


def values_for(step: str, value: Any = None) -> dict[str, Any]:
    """Every parameter of a step: the valid value, or ``value`` for all of them when given."""
    return {name: (VALID[name] if value is None else value) for name in STEPS[step]}


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return "" if value is None else str(value)


# --- the step list ---------------------------------------------------------------------------------


def test_readme_table_is_read() -> None:
    assert len(STEPS) == 23
    assert STEPS["facts"] == []
    assert STEPS["install-host-key"] == ["product_key", "application_id"]
    assert STEPS["kms-host-settings"] == [
        "listening_port",
        "dns_publishing",
        "low_priority",
        "activation_interval",
        "renewal_interval",
    ]


@pytest.mark.parametrize("fmt", ["ps1", "cmd"])
def test_every_readme_step_has_a_template_and_vice_versa(fmt: ScriptFormat) -> None:
    assert available_steps(fmt) == sorted(STEPS)
    assert [p.name.split(".")[0] for p in template_files(fmt)] == sorted(STEPS)


@pytest.mark.parametrize("fmt", ["ps1", "cmd"])
def test_header_names_the_file(fmt: str) -> None:
    for path in template_files(fmt):
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        match = HEADER_RE.match(first)
        assert match, f"{path.name}: line 1 is not the header"
        assert match["step"] == path.name.split(".")[0]
        assert first.startswith("# " if fmt == "ps1" else ":: ")


# --- PowerShell ------------------------------------------------------------------------------------


def check_ps1(step: str, params: dict[str, Any]) -> str:
    script = render(ScriptRef(step=step, params=params)).text
    lines = script.split("\r\n")
    assert HEADER_RE.match(lines[0]) and lines[0].startswith(f"# kmsadmin-step: {step}/")
    assert lines[1] == "$ErrorActionPreference = 'Stop'"
    assert lines[2] == "$ProgressPreference = 'SilentlyContinue'"
    assert pwsh.syntax_errors(script) == []
    # each value stays exactly one single-quoted literal: the grammar reads every one back unchanged
    assert pwsh.read_params(script) == {name: as_text(value) for name, value in params.items()}
    # CRLF only: the bare LF / CR characters are exactly those inside the values
    bare_lf = sum(as_text(v).replace("\r\n", "").count("\n") for v in params.values())
    bare_cr = sum(as_text(v).replace("\r\n", "").count("\r") for v in params.values())
    stripped = script.replace("\r\n", "")
    assert stripped.count("\n") == bare_lf
    assert stripped.count("\r") == bare_cr
    assert script.endswith("\r\n")
    return script


@pytest.mark.parametrize("step", sorted(STEPS))
def test_ps1_renders_valid_values(step: str) -> None:
    script = check_ps1(step, values_for(step))
    assert f"Step = '{step}'" in script
    assert "Write-KmsResult" in script and "Write-KmsError -ErrorRecord $_" in script


@pytest.mark.parametrize("step", sorted(STEPS))
@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_ps1_hostile_values_stay_literals(step: str, hostile: str) -> None:
    params = values_for(step, hostile)
    script = check_ps1(step, params)
    if params:
        assert hostile.replace("'", "''") in script


@pytest.mark.parametrize("step", sorted(s for s in STEPS if "application_id" in STEPS[s]))
def test_ps1_office_application_id(step: str) -> None:
    params = {**values_for(step), "application_id": OFFICE_APP}
    assert pwsh.read_params(check_ps1(step, params))["application_id"] == OFFICE_APP


CIM_METHODS = {
    "install-host-key": ["InstallProductKey", "RefreshLicenseStatus"],
    "install-gvlk": ["InstallProductKey", "RefreshLicenseStatus"],
    "activate": ["Activate", "RefreshLicenseStatus"],
    "phone-deposit": ["DepositOfflineConfirmationId", "RefreshLicenseStatus"],
    "kms-host-settings": [
        "SetKeyManagementServiceListeningPort",
        "DisableKeyManagementServiceDnsPublishing",
        "EnableKeyManagementServiceLowPriority",
        "SetVLActivationInterval",
        "SetVLRenewalInterval",
    ],
    "set-kms-host": [
        "ClearKeyManagementServicePort",
        "SetKeyManagementServiceMachine",
        "SetKeyManagementServicePort",
    ],
    "clear-kms-host": ["ClearKeyManagementServiceMachine", "ClearKeyManagementServicePort"],
    "set-lookup-domain": ["SetKeyManagementServiceLookupDomain"],
    "clear-lookup-domain": ["ClearKeyManagementServiceLookupDomain"],
    "host-caching": ["DisableKeyManagementServiceHostCaching"],
}


@pytest.mark.parametrize("step", sorted(CIM_METHODS))
def test_ps1_calls_the_cim_methods_with_error_action_stop(step: str) -> None:
    script = render(ScriptRef(step=step, params=values_for(step))).text
    calls = re.findall(r"Invoke-CimMethod [^\r\n]*", script)
    assert sorted({re.search(r"-MethodName (\w+)", c)[1] for c in calls}) == sorted(CIM_METHODS[step])  # type: ignore[index]
    for call in calls:
        assert call.endswith("-ErrorAction Stop"), call
        method = re.search(r"-MethodName (\w+)", call)[1]  # type: ignore[index]
        # every call is followed by the ReturnValue check and changes state only after a stage is named
        assert f"Assert-KmsReturn -Result $result -Method '{method}'" in script
        assert f"$Kms.Stage = '{method}'" in script


def test_ps1_read_only_steps_call_no_methods() -> None:
    for step in ("facts", "phone-iid", "kms-events", "kms-reach"):
        script = render(ScriptRef(step=step, params=values_for(step))).text
        assert "Invoke-CimMethod" not in script
        assert "Changed = $false" in script and "$Kms.Changed = $true" not in script


def test_ps1_facts_reads_what_the_readme_documents() -> None:
    script = render(ScriptRef(step="facts")).text
    for needle in (
        "Win32_OperatingSystem",
        "OperatingSystemSKU",
        "ProductType",
        "HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion",
        "InstallationType",
        "PartialProductKey <> NULL",
        "Get-WindowsFeature",
        "Get-NetFirewallRule -Name 'SPPSVC-In-TCP'",
        "Get-HotFix",
        "WindowsPrincipal",
        "LocalAccountTokenFilterPolicy",
        "-500\\z",
        "PartOfDomain",
        "time_utc",
    ):
        assert needle in script, needle
    readme = (TEMPLATES / "README.md").read_text(encoding="utf-8")
    facts = json.loads(readme.split("### `facts` data", 1)[1].split("```json", 1)[1].split("```", 1)[0])
    keys: set[str] = set()

    def collect(obj: Any) -> None:
        if isinstance(obj, dict):
            keys.update(obj)
            for value in obj.values():
                collect(value)
        elif isinstance(obj, list):
            for value in obj:
                collect(value)

    collect(facts)
    for key in sorted(keys):
        # every documented key is produced by the script: `name = ...` in an [ordered] literal
        assert re.search(rf"^\s*'?{re.escape(key)}'? = ", script, flags=re.M), key


def test_ps1_kms_host_settings_restarts_sppsvc_only_after_a_change() -> None:
    script = render(ScriptRef(step="kms-host-settings", params=values_for("kms-host-settings"))).text
    body = script.split("if ($pending.Count -gt 0) {", 1)[1]
    assert "Restart-Service -Name 'sppsvc'" in body
    assert "Restart-Service" not in script.split("if ($pending.Count -gt 0) {", 1)[0]


# --- style the grammar parses without false positives (reference transport.md §5) ------------------


@pytest.mark.parametrize("path", template_files("ps1") + partial_files("ps1"), ids=lambda p: p.name)
def test_ps1_conservative_style(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    for number, line in enumerate(source.splitlines(), 1):
        assert not line.rstrip().endswith("`"), f"{path.name}:{number}: backtick line continuation"
        assert not re.match(r"\s*:\w+\s+(while|for|foreach|do|switch)\b", line), (
            f"{path.name}:{number}: label"
        )
        if re.search(r"\bparam\s*\(", line):
            assert line.strip() in ("param(", "param()"), f"{path.name}:{number}: param( not on its own line"
        assert "Write-Host" not in line, f"{path.name}:{number}: Write-Host writes outside the JSON result"
    assert "\t" not in source


# --- cmd -------------------------------------------------------------------------------------------

JSON_LINE_RE = re.compile(r'^echo \{"kmsadmin":1,"step":"%KMSADMIN_STEP%","rc":%KMSADMIN_RC%\}\r$', re.M)


def commands(script: str) -> str:
    """The script without its ``::`` comment lines."""
    return "\r\n".join(line for line in script.split("\r\n") if not line.startswith("::"))


#: Secrets a cmd hand-off script never holds: it reads them on the host when it runs.
CMD_READ_AT_RUN_TIME = {("install-host-key", "product_key")}


def check_cmd(step: str, params: dict[str, Any]) -> str:
    script = render(ScriptRef(step=step, params=params, fmt="cmd")).text
    lines = script.split("\r\n")
    assert lines[0].startswith(f":: kmsadmin-step: {step}/")
    assert "\n" not in script.replace("\r\n", "") and "\r" not in script.replace("\r\n", "")
    for name, value in params.items():
        if (step, name) in CMD_READ_AT_RUN_TIME:
            # the hand-off script names the key by its tail and reads the key itself when it runs
            assert f'set KMSADMIN_KEY_TAIL="{as_text(value)[-5:]}"\r\n' in script
            others = tuple(f"set KMSADMIN_{n.upper()}=" for n in params if n != name)
            lines_without_others = [line for line in lines if not line.startswith(others)]
            assert len(as_text(value)) <= 5 or all(
                as_text(value) not in line for line in lines_without_others
            )
            continue
        assert f'set KMSADMIN_{name.upper()}="{as_text(value)}"\r\n' in script
    assert f"set KMSADMIN_STEP={step}\r\n" in script
    assert JSON_LINE_RE.search(script)
    assert lines[-2] == "endlocal & exit /b %KMSADMIN_RC%" and lines[-1] == ""
    for line in lines:
        if line.startswith("cscript"):
            assert line.startswith("cscript //NoLogo ") and line.endswith(" <NUL"), line
    assert "wscript" not in commands(script).lower()
    return commands(script)


@pytest.mark.parametrize("step", sorted(STEPS))
def test_cmd_renders_valid_values_quoted(step: str) -> None:
    check_cmd(step, values_for(step))


@pytest.mark.parametrize("step", sorted(s for s in STEPS if STEPS[s]))
@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_cmd_refuses_hostile_values(step: str, hostile: str) -> None:
    params = values_for(step, hostile)
    if set(hostile) & CMD_FORBIDDEN:
        with pytest.raises(TemplateError):
            render(ScriptRef(step=step, params=params, fmt="cmd"))
    else:
        # no cmd metacharacter: the value is inert inside one double-quoted argument
        check_cmd(step, params)


def test_hostile_list_exercises_the_cmd_filter() -> None:
    refused = [h for h in HOSTILE if set(h) & CMD_FORBIDDEN]
    assert len(refused) >= len(HOSTILE) // 2


@pytest.mark.parametrize(
    ("step", "office_tool", "windows_tool"),
    [
        (
            "install-gvlk",
            '"%KMSADMIN_OSPP%" /inpkey:%KMSADMIN_PRODUCT_KEY%',
            f"{SLMGR} /ipk %KMSADMIN_PRODUCT_KEY%",
        ),
        ("activate", '"%KMSADMIN_OSPP%" /act', f"{SLMGR} /ato <NUL"),
        ("phone-iid", '"%KMSADMIN_OSPP%" /dinstid', f"{SLMGR} /dti <NUL"),
        ("phone-deposit", '"%KMSADMIN_OSPP%" /actcid:', f"{SLMGR} /atp %KMSADMIN_CONFIRMATION_ID% <NUL"),
    ],
)
def test_cmd_office_goes_through_ospp(step: str, office_tool: str, windows_tool: str) -> None:
    office = check_cmd(step, {**values_for(step), "application_id": OFFICE_APP})
    windows = check_cmd(step, values_for(step))
    assert office_tool in office and "Office16\\ospp.vbs" in office and "slmgr.vbs" not in office
    assert windows_tool in windows and "ospp.vbs" not in windows


def test_cmd_office_with_activation_id_uses_slmgr() -> None:
    act = "47f3b983-7c53-4d45-abc6-bcd91e2dd90a"
    script = check_cmd(
        "activate", {**values_for("activate"), "application_id": OFFICE_APP, "activation_id": act}
    )
    assert f"{SLMGR} /ato %KMSADMIN_ACTIVATION_ID% <NUL" in script and "ospp.vbs" not in script


def test_cmd_kms_host_settings_sends_only_given_values() -> None:
    nothing = dict.fromkeys(STEPS["kms-host-settings"], "")
    assert "slmgr.vbs" not in check_cmd("kms-host-settings", nothing)
    assert "sppsvc" not in check_cmd("kms-host-settings", nothing)
    some = {**nothing, "dns_publishing": False, "low_priority": True, "renewal_interval": 10080}
    script = check_cmd("kms-host-settings", some)
    assert [line.split('slmgr.vbs" ', 1)[1] for line in script.split("\r\n") if 'slmgr.vbs" /' in line] == [
        "/cdns <NUL",
        "/cpri <NUL",
        "/sri %KMSADMIN_RENEWAL_INTERVAL% <NUL",
    ]
    assert "net start sppsvc <NUL" in script


def test_cmd_set_kms_host_forms() -> None:
    both = check_cmd("set-kms-host", values_for("set-kms-host"))
    assert f"{SLMGR} /skms %KMSADMIN_KMS_HOST%:%KMSADMIN_KMS_PORT% <NUL" in both
    port_only = check_cmd("set-kms-host", {**values_for("set-kms-host"), "kms_host": ""})
    assert f"{SLMGR} /skms :%KMSADMIN_KMS_PORT% <NUL" in port_only
    act = "47f3b983-7c53-4d45-abc6-bcd91e2dd90a"
    per_product = check_cmd(
        "set-kms-host", {**values_for("set-kms-host"), "kms_port": "", "activation_id": act}
    )
    assert f"{SLMGR} /skms %KMSADMIN_KMS_HOST% %KMSADMIN_ACTIVATION_ID% <NUL" in per_product


def test_cmd_host_caching() -> None:
    assert f"{SLMGR} /skhc <NUL" in check_cmd("host-caching", {"enabled": True})
    assert f"{SLMGR} /ckhc <NUL" in check_cmd("host-caching", {"enabled": "False"})
    refused = check_cmd("host-caching", {"enabled": "maybe"})
    assert "slmgr.vbs" not in refused and "set KMSADMIN_RC=87" in refused


def test_cmd_firewall_passes_values_through_the_environment() -> None:
    script = check_cmd("firewall", values_for("firewall"))
    command = next(line for line in script.split("\r\n") if line.startswith("powershell.exe"))
    assert "SPPSVC-In-TCP" not in command and "Domain,Private" not in command
    assert "$env:KMSADMIN_RULE_NAME" in command and "$env:KMSADMIN_PROFILES" in command


# --- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ps1", "cmd"])
def test_host_key_is_masked_in_display(fmt: ScriptFormat) -> None:
    key = "ABCDE-FGHIJ-KLMNO-PQRST-VWXYZ"
    rendered = render(
        ScriptRef(
            step="install-host-key",
            params={"application_id": WINDOWS_APP},
            secrets={"product_key": Secret(key)},
            fmt=fmt,
        )
    )
    assert key not in rendered.display and "FGHIJ" not in rendered.display
    if fmt == "cmd":
        # the hand-off script never holds the key, not even masked: it reads it when it runs
        assert key not in rendered.text and "FGHIJ" not in rendered.text
        for script in (rendered.text, rendered.display):
            assert 'set KMSADMIN_KEY_TAIL="VWXYZ"\r\n' in script and "*****" not in script
    else:
        assert key in rendered.text
        assert "*****-*****-*****-*****-VWXYZ" in rendered.display
    assert key not in rendered.header and key not in repr(rendered)
    if fmt == "ps1":
        assert pwsh.read_params(rendered.text)["product_key"] == key
        assert pwsh.read_params(rendered.display)["product_key"] == "*****-*****-*****-*****-VWXYZ"


def test_host_key_script_never_outputs_the_key() -> None:
    source = (TEMPLATES / "ps1" / "install-host-key.ps1.j2").read_text(encoding="utf-8")
    uses = [line.strip() for line in source.splitlines() if "$ProductKey" in line and "{{" not in line]
    assert uses, "the key must be used"
    for line in uses:
        assert not re.search(r"Write-|ConvertTo-Json|data|Message ", line), line
    assert "Redact = $ProductKey" in source
    assert "partial_key = Get-KmsText -Value $product.PartialProductKey" in source
