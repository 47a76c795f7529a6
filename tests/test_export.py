"""``kmsadmin export ansible`` without a connection: the project's shape, scripts, secrets and refusals.

Inventories are the lab's own (``kmsadmin.lab.inventory.build_inventory`` over a fresh ``Fleet``) with
an OS mix whose captions name their edition, so no facts are needed. ansible-playbook only checks the
syntax here; tests/lab/test_export_ansible.py runs the project against a lab.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmsadmin import catalog
from kmsadmin.errors import ConfigError
from kmsadmin.export.ansible import FAILED_PLAY, MARKER, write_project
from kmsadmin.export.plan import HOST_KEY_PLACEHOLDER, plan_export
from kmsadmin.fleet.inventory import load_inventory
from kmsadmin.fleet.playbook import load_playbook
from kmsadmin.fleet.vault import VaultSecret, VaultSecrets
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.inventory import build_inventory
from kmsadmin.render import parse_header
from tests.test_inventory_ansible import VAULT_PASSWORD, ansible_env, vault_encrypt, vault_encrypt_file

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO / "playbooks"
MIX = "win11-enterprise=3,server2022-standard=2"


def lab_inventory(tmp_path: Path, *, hosts: int = 5, kms_hosts: int = 1, os_mix: str = MIX) -> Path:
    fleet = Fleet.create(tmp_path / "lab", hosts=hosts, kms_hosts=kms_hosts, os_mix=os_mix)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(build_inventory(fleet, dict.fromkeys(fleet.names(), 5985), tls=False)))
    return path


def lab_key(inventory: Path, host: str = "kms01") -> str:
    inv = load_inventory(inventory)
    return Path(str(inv.hosts[host]["kmsadmin_lab_host_key_file"])).read_text().strip()


def export(
    tmp_path: Path, inventory: Path, playbook: str = "site.yml", **kwargs: Any
) -> tuple[Path, dict[str, Any]]:
    plan = plan_export(load_playbook(PLAYBOOKS / playbook), load_inventory(inventory), **kwargs)
    out = tmp_path / "project"
    return out, write_project(plan, out)


def export_cli(playbook: Path, inventory: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kmsadmin export ansible PLAYBOOK -i INVENTORY -o OUT ARGS...`` as a user runs it."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "kmsadmin", "export", "ansible", str(playbook)),
            *("-i", str(inventory), "-o", str(out), *args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ansible_in(project: Path, tool: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """ansible-core's ``tool`` (ansible, ansible-inventory...) run in an exported project's directory."""
    return subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        cwd=project,
        env=ansible_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_site_is_the_playbooks_plays_in_order_with_their_batching(tmp_path: Path) -> None:
    out, summary = export(tmp_path, lab_inventory(tmp_path))
    site = yaml.safe_load((out / "site.yml").read_text())
    assert [p["name"] for p in site] == ["KMS hosts", "KMS clients", FAILED_PLAY]
    kms, clients, failed = site
    assert (kms["hosts"], kms["serial"], kms["max_fail_percentage"]) == ("kms_hosts", 1, 0)
    assert (clients["hosts"], clients["serial"]) == ("clients:!kms_hosts", [1, "10%", "25%"])
    assert clients["max_fail_percentage"] == 10
    assert all(p["gather_facts"] is False for p in site)
    assert failed["hosts"] == "all"
    # both plays have a failure policy (no rescue); the last play reports the waiting clients
    assert [t["when"] for t in failed["tasks"]] == ["kmsadmin_waiting_play is defined"]
    assert summary["plays"] == [{"name": "KMS hosts", "hosts": 1}, {"name": "KMS clients", "hosts": 5}]
    assert (out / MARKER).is_file() and (out / "ansible.cfg").is_file()
    readme = (out / "README.md").read_text()
    assert (
        "first of: host var kmsadmin_host_key_file, host var kmsadmin_lab_host_key_file, "
        "environment variable KMSADMIN_HOST_KEY"
    ) in readme


def test_tasks_are_raw_scripts_with_changed_and_failed_from_the_json(tmp_path: Path) -> None:
    out, _ = export(tmp_path, lab_inventory(tmp_path))
    site = yaml.safe_load((out / "site.yml").read_text())

    def tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        flat: list[dict[str, Any]] = []
        for item in items:
            flat.extend(tasks(item["block"]) if "block" in item else [item])
        return flat

    kms_tasks = tasks(site[0]["tasks"])
    names = [t["name"] for t in kms_tasks]
    assert names == [
        "kmsadmin export: this host was exported",
        "setup-host: install-feature",
        "setup-host: firewall",
        "setup-host: a host key reference is set",
        "setup-host: install-host-key",
        "setup-host: activate",
        "setup-host: verify",
    ]
    client_names = [t["name"] for t in tasks(site[1]["tasks"])]
    assert client_names[1:] == [
        "convert-client: install-gvlk",
        "convert-client: set-kms-host",
        "convert-client: activate",
        "convert-client: waiting for the KMS host's count",
        "convert-client: a waiting host ends this play (it activates by itself later)",
        "convert-client: verify",
    ]
    for task in kms_tasks + tasks(site[1]["tasks"]):
        if "ansible.builtin.raw" in task:
            assert set(task) >= {"register", "changed_when", "failed_when"}
            assert "from_json" in task["failed_when"]
            assert ".error" in task["failed_when"]
    keyed = next(t for t in kms_tasks if t["name"] == "setup-host: install-host-key")
    assert keyed["no_log"] is True
    assert "kmsadmin_lab_host_key_file" in keyed["vars"]["kmsadmin_host_key_literal"]
    assert "KMSADMIN_HOST_KEY" in keyed["vars"]["kmsadmin_host_key_literal"]
    activate = next(t for t in tasks(site[1]["tasks"]) if t["name"] == "convert-client: activate")
    assert "forced[2]" in activate["ansible.builtin.raw"] and "is changed" in activate["ansible.builtin.raw"]


def _jinja(expression: str, **variables: Any) -> Any:
    """Evaluate an exported condition the way Ansible does (Jinja2 plus Ansible's from_json filter)."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False)  # noqa: S701
    env.filters["from_json"] = json.loads
    return env.compile_expression(expression)(**variables)


def _answer(error: dict[str, Any] | None) -> dict[str, Any]:
    body = {"kmsadmin": 1, "step": "activate", "changed": error is None, "data": {}}
    if error is not None:
        body["error"] = error
    return {"rc": 0, "stdout": json.dumps(body) + "\r\n"}


def test_a_client_refused_for_the_kms_count_waits_instead_of_failing(tmp_path: Path) -> None:
    out, _ = export(tmp_path, lab_inventory(tmp_path))
    site = yaml.safe_load((out / "site.yml").read_text())

    def tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        flat: list[dict[str, Any]] = []
        for item in items:
            flat.extend(tasks(item["block"]) if "block" in item else [item])
        return flat

    client_tasks = tasks(site[1]["tasks"])
    activate = next(t for t in client_tasks if t["name"] == "convert-client: activate")
    record, end = client_tasks[client_tasks.index(activate) + 1 : client_tasks.index(activate) + 3]
    var = activate["register"]
    waiting = _answer({"hresult": "0xC004F038", "message": "count 3, needs 25"})
    refused = _answer({"hresult": "0xC004F074", "message": "no KMS host"})
    done = _answer(None)
    # 0xC004F038 does not fail the task (it does not count toward max_fail_percentage) ...
    assert _jinja(activate["failed_when"], **{var: waiting}) is False
    assert _jinja(activate["failed_when"], **{var: refused}) is True
    assert _jinja(activate["failed_when"], **{var: done}) is False
    assert _jinja(activate["failed_when"], **{var: {"rc": 1, "stdout": "not json"}}) is True
    # ... the host records why and leaves the play; other outcomes go on
    assert record["ansible.builtin.set_fact"]["kmsadmin_waiting_play"] == "KMS clients"
    assert end["ansible.builtin.meta"] == "end_host"
    for task in (record, end):
        assert _jinja(task["when"], **{var: waiting}) is True
        assert _jinja(task["when"], **{var: refused}) is False
        assert _jinja(task["when"], **{var: done}) is False
    # setup-host's activate knows no waiting
    kms_activate = next(t for t in tasks(site[0]["tasks"]) if t["name"] == "setup-host: activate")
    assert _jinja(kms_activate["failed_when"], **{kms_activate["register"]: waiting}) is True
    # the last play fails a waiting host with the explanation, so the exit code is not 0
    report = next(t for t in site[-1]["tasks"] if "waiting" in t["name"])
    message = report["ansible.builtin.fail"]["msg"]
    assert "0xC004F038" in message and "Windows retries every 2 hours" in message
    assert "waiting" in (out / "README.md").read_text()


def test_host_vars_name_each_hosts_scripts_and_the_scripts_are_rendered_steps(tmp_path: Path) -> None:
    inventory = lab_inventory(tmp_path)
    out, _ = export(tmp_path, inventory)
    inv = load_inventory(inventory)
    for host in inv.hosts:
        data = yaml.safe_load((out / "host_vars" / f"{host}.yml").read_text())["kmsadmin_export"]
        play = "KMS hosts" if host == "kms01" else "KMS clients"
        assert list(data) == [play]
        (entry,) = data[play]
        for name in [*entry["scripts"], entry["verify"], *(f for f in entry["forced"] if f)]:
            text = (out / name).read_text(encoding="utf-8")
            header = parse_header(text)
            assert header is not None and name.split("/")[1].startswith(header[0])
            assert b"\r\n" in (out / name).read_bytes()
    client = yaml.safe_load((out / "host_vars" / "client001.yml").read_text())["kmsadmin_export"][
        "KMS clients"
    ][0]
    gvlk = (out / client["scripts"][0]).read_text()
    assert f"$ProductKey = '{catalog.find_client_key('windows-11-enterprise').gvlk}'" in gvlk
    assert "$KmsHost = 'kms01.lab.test'" in (out / client["scripts"][1]).read_text()
    assert "$Force = 'False'" in (out / client["scripts"][2]).read_text()
    assert "$Force = 'True'" in (out / client["forced"][2]).read_text()


def test_the_host_key_is_never_written_only_its_placeholder(tmp_path: Path) -> None:
    inventory = lab_inventory(tmp_path)
    key = lab_key(inventory)
    out, _ = export(tmp_path, inventory)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert all(key.encode() not in p.read_bytes() for p in files)
    keyed = [p for p in files if p.name.startswith("install-host-key-")]
    assert len(keyed) == 1
    assert f"$ProductKey = '{HOST_KEY_PLACEHOLDER}'" in keyed[0].read_text()
    assert (out / "inventory.yml").stat().st_mode & 0o777 == 0o600
    assert (out / "inventory.yml").read_text() == inventory.read_text()


def test_limit_exports_only_those_hosts(tmp_path: Path) -> None:
    out, summary = export(tmp_path, lab_inventory(tmp_path), limit="client00[1-2]")
    assert sorted(p.stem for p in (out / "host_vars").iterdir()) == ["client001", "client002"]
    assert summary["plays"] == [{"name": "KMS hosts", "hosts": 0}, {"name": "KMS clients", "hosts": 2}]
    assert "--limit 'client00[1-2]'" in (out / "README.md").read_text()
    with pytest.raises(ConfigError, match="matches no host"):
        plan_export(
            load_playbook(PLAYBOOKS / "site.yml"), load_inventory(out / "inventory.yml"), limit="nope"
        )


def test_clients_are_spread_over_the_kms_hosts_like_the_rollout(tmp_path: Path) -> None:
    inventory = lab_inventory(tmp_path, hosts=10, kms_hosts=2, os_mix="server2022-standard=10")
    out, _ = export(tmp_path, inventory, playbook="clients.yml")
    pinned = {}
    for host in ("client001", "client002", "client003", "client004"):
        entry = yaml.safe_load((out / "host_vars" / f"{host}.yml").read_text())["kmsadmin_export"][
            "KMS clients"
        ][0]
        text = (out / entry["scripts"][1]).read_text()
        pinned[host] = text.split("$KmsHost = '", 1)[1].split("'", 1)[0]
    assert pinned == {
        "client001": "kms01.lab.test",
        "client002": "kms02.lab.test",
        "client003": "kms01.lab.test",
        "client004": "kms02.lab.test",
    }


def test_an_unknown_edition_needs_inventory_vars_or_gather(tmp_path: Path) -> None:
    inventory = lab_inventory(tmp_path, hosts=1, os_mix="win10-enterprise-ltsc2021=1")
    with pytest.raises(ConfigError, match=r"edition is unknown.*--gather"):
        export(tmp_path, inventory)
    data = yaml.safe_load(inventory.read_text())
    data["all"]["children"]["clients"]["hosts"]["client001"]["kmsadmin_edition"] = (
        "windows-10-enterprise-ltsc-2021"
    )
    inventory.write_text(yaml.safe_dump(data))
    out, _ = export(tmp_path, inventory)
    assert (out / "host_vars" / "client001.yml").is_file()


def test_a_non_empty_directory_that_is_not_an_export_is_refused_and_an_export_is_replaced(
    tmp_path: Path,
) -> None:
    inventory = lab_inventory(tmp_path)
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    plan = plan_export(load_playbook(PLAYBOOKS / "site.yml"), load_inventory(inventory))
    with pytest.raises(ConfigError, match="not a kmsadmin export"):
        write_project(plan, out)
    (out / "notes.txt").unlink()
    write_project(plan, out)
    (out / "scripts" / "stale.ps1").write_text("old")
    write_project(plan, out)
    assert not (out / "scripts" / "stale.ps1").exists()


def test_a_json_inventory_is_written_as_yaml_with_the_same_hosts_and_groups(tmp_path: Path) -> None:
    inventory = lab_inventory(tmp_path)
    inv = load_inventory(inventory)
    json_path = tmp_path / "inventory.json"
    json_path.write_text(json.dumps(_listing(inventory)))
    out, summary = export(tmp_path, json_path)
    assert summary["inventory"] == "converted from JSON"
    copied = load_inventory(out / "inventory.yml")
    for group in ("kms_hosts", "clients", "servers"):
        assert set(copied.groups[group]) == set(inv.groups[group])
    assert copied.hosts["client001"]["ansible_port"] == 5985


def _listing(inventory: Path) -> dict[str, Any]:
    """The inventory as ``ansible-inventory --list`` prints it."""
    inv = load_inventory(inventory)
    listing: dict[str, Any] = {"_meta": {"hostvars": {h: dict(v) for h, v in inv.hosts.items()}}}
    for group in ("kms_hosts", "clients", "servers"):
        listing[group] = {"hosts": list(inv.groups[group])}
    listing["all"] = {"children": ["kms_hosts", "clients", "servers", "ungrouped"]}
    return listing


def _as_ini(inventory: Path) -> str:
    inv = load_inventory(inventory)
    lines: list[str] = []
    for group in ("kms_hosts", "clients", "servers"):
        lines.append(f"[{group}]")
        for host in inv.groups[group]:
            lines.append(host + "".join(f" {k}={v!r}" for k, v in inv.hosts[host].items()))
    return "\n".join(lines) + "\n"


def _reshape(tmp_path: Path, inventory: Path, shape: str) -> tuple[Path, VaultSecrets | None]:
    """The same hosts and vars as ``inventory`` in another shape: the path to give ``-i``, the vault."""
    if shape == "yaml":
        return inventory, None
    if shape == "yaml-without-extension":
        shutil.copy(inventory, tmp_path / "hosts")
        return tmp_path / "hosts", None
    if shape == "json":
        (tmp_path / "inventory.json").write_text(json.dumps(_listing(inventory)))
        return tmp_path / "inventory.json", None
    if shape == "ini":
        (tmp_path / "hosts.ini").write_text(_as_ini(inventory))
        return tmp_path / "hosts.ini", None
    if shape == "script":
        script = tmp_path / "inventory.sh"
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(_listing(inventory))}\nEOF\n")
        script.chmod(0o755)
        return script, None
    if shape == "directory":
        (tmp_path / "inv").mkdir()
        shutil.move(inventory, tmp_path / "inv" / "hosts.yml")
        return tmp_path / "inv", None
    if shape == "group_vars-beside":
        (tmp_path / "group_vars").mkdir()
        (tmp_path / "group_vars" / "all.yml").write_text("site: hq\n")
        return inventory, None
    assert shape == "vault"
    doc = yaml.safe_load(inventory.read_text())
    doc["all"]["vars"]["vault_marker"] = "@@VAULT@@"
    text = yaml.safe_dump(doc).replace("'@@VAULT@@'", "!vault |" + vault_encrypt(tmp_path, "Lab-P@ss1"))
    assert "!vault" in text
    inventory.write_text(text)
    secret = VaultSecret("default", VAULT_PASSWORD.encode(), "test")
    return inventory, VaultSecrets((secret,))


@pytest.mark.parametrize(
    ("shape", "how"),
    [
        ("yaml", "copied"),
        ("yaml-without-extension", "copied"),
        ("json", "converted from JSON"),
        ("ini", "converted from INI"),
        ("script", "converted from a dynamic inventory script"),
        ("directory", "merged from several sources"),
        ("group_vars-beside", "written with merged vars"),
        ("vault", "written with vault values encrypted again"),
    ],
)
def test_the_summary_says_how_the_inventory_was_written(tmp_path: Path, shape: str, how: str) -> None:
    original = lab_inventory(tmp_path)
    source, vault = _reshape(tmp_path, original, shape)
    inv = load_inventory(source, vault=vault)
    out = tmp_path / "project"
    summary = write_project(plan_export(load_playbook(PLAYBOOKS / "site.yml"), inv), out)
    assert summary["inventory"] == how
    written = (out / "inventory.yml").read_text()
    if how == "copied":
        assert written == source.read_text()
        return
    assert written.startswith("# converted by kmsadmin export ansible")
    assert ("!vault |" in written) == (shape == "vault")
    again = load_inventory(out / "inventory.yml", vault=vault)
    assert set(again.hosts) == set(inv.hosts)
    assert again.hosts["client001"]["ansible_port"] == 5985
    assert again.hosts["kms01"].get("site") == ("hq" if shape == "group_vars-beside" else None)


def test_ansible_playbook_accepts_the_project(tmp_path: Path) -> None:
    out, _ = export(tmp_path, lab_inventory(tmp_path))
    env = {
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "PATH": str(Path(sys.executable).parent),
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "inventory.yml",
            "site.yml",
            "--syntax-check",
        ],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_writes_the_project_and_reports_a_bad_limit_with_exit_2(tmp_path: Path) -> None:
    inventory = lab_inventory(tmp_path)
    out = tmp_path / "cli-project"
    proc = export_cli(PLAYBOOKS / "site.yml", inventory, out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hosts"] == 6
    bad = export_cli(PLAYBOOKS / "site.yml", inventory, out, "--limit", "nothing-here")
    assert bad.returncode == 2 and "matches no host" in bad.stderr


@pytest.mark.parametrize("name", ["../../outside", "/abs/outside", "a/b", "..", ".hidden", "-x", "a\\b"])
def test_host_names_that_are_not_one_file_name_are_refused(tmp_path: Path, name: str) -> None:
    inventory = lab_inventory(tmp_path)
    doc = yaml.safe_load(inventory.read_text())
    clients = doc["all"]["children"]["clients"]["hosts"]
    clients[name] = dict(clients["client001"])
    inventory.write_text(yaml.safe_dump(doc))
    before = set(tmp_path.rglob("*")) | set(Path("/abs").glob("*"))
    with pytest.raises(ConfigError, match="cannot be a file name under host_vars/") as err:
        export(tmp_path, inventory)
    assert repr(name) in str(err.value)
    assert not (tmp_path / "project").exists(), "nothing is written before the names are checked"
    assert set(tmp_path.rglob("*")) | set(Path("/abs").glob("*")) == before


def test_the_inventory_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import kmsadmin.export.ansible as module

    modes: dict[str, int] = {}
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        modes[Path(dst).name] = os.stat(src).st_mode & 0o777
        real_replace(src, dst)

    monkeypatch.setattr(module.os, "replace", replace)
    old = os.umask(0)
    try:
        out, _ = export(tmp_path, lab_inventory(tmp_path))
    finally:
        os.umask(old)
    assert modes["inventory.yml"] == 0o600, "never readable by others, not even before a chmod"
    assert (out / "inventory.yml").stat().st_mode & 0o777 == 0o600


def test_vaulted_inventory_values_are_exported_vaulted_and_ansible_decrypts_them(tmp_path: Path) -> None:
    """Secrets read from Vault stay vaulted (same vault id and password); plain values stay plain."""
    default_pw, prod_pw = tmp_path / "default.pw", tmp_path / "prod.pw"
    default_pw.write_text(VAULT_PASSWORD + "\n")
    prod_pw.write_text("prod vault password\n")
    secrets = {
        "winrm": "Wsman-Pa55word-from-prod-vault",  # inline !vault with vault id 'prod' (format 1.2)
        "user": "vaulted-admin-7Q2",  # from a whole vault-encrypted host_vars file (format 1.1)
        "token": "site-token-XK4-93aa",  # a string of that file too
    }
    source = lab_inventory(tmp_path / "src")
    doc = yaml.safe_load(source.read_text())
    for group in doc["all"]["children"].values():
        for hvars in (group.get("hosts") or {}).values():
            (hvars or {}).pop("ansible_password", None)
    inv_dir = tmp_path / "inv"
    (inv_dir / "group_vars" / "all").mkdir(parents=True)
    (inv_dir / "host_vars").mkdir()
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump(doc))
    (inv_dir / "group_vars" / "all" / "vars.yml").write_text(
        "ansible_password: '{{ vault_winrm_password }}'\nwinrm_note: 'pw {{ vault_winrm_password }}'\n"
    )
    (inv_dir / "group_vars" / "all" / "vault.yml").write_text(
        "vault_winrm_password: !vault |"
        + vault_encrypt(tmp_path, secrets["winrm"], vault_id="prod", password="prod vault password")
    )
    kms_vars = inv_dir / "host_vars" / "kms01.yml"
    kms_vars.write_text(
        f"ansible_user: {secrets['user']}\nkmsadmin_site_token: {secrets['token']}\nsite_port: 5986\n"
    )
    vault_encrypt_file(tmp_path, kms_vars)  # with VAULT_PASSWORD
    assert kms_vars.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")

    out = tmp_path / "project"
    vault_args = ["--vault-id", f"prod@{prod_pw}", "--vault-password-file", str(default_pw)]
    proc = export_cli(PLAYBOOKS / "site.yml", inv_dir / "hosts.yml", out, *vault_args)
    assert proc.returncode == 0, proc.stderr
    for secret in secrets.values():
        assert secret not in proc.stdout + proc.stderr
        for path in out.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"{secret} in plain text in {path}"

    # the raw YAML: vaulted values as !vault (1.2 naming 'prod', 1.1 for the default password),
    # the values that were plain in the input plain
    text = (out / "inventory.yml").read_text()
    assert "$ANSIBLE_VAULT;1.2;AES256;prod" in text and "$ANSIBLE_VAULT;1.1;AES256" in text

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: ("VAULT", loader.construct_scalar(node)))
    written = yaml.load(text, Loader=Loader)["all"]["hosts"]  # noqa: S506 - SafeLoader subclass
    kms, client = written["kms01"], written["client001"]
    assert kms["ansible_password"][1].startswith("$ANSIBLE_VAULT;1.2;AES256;prod")
    assert kms["winrm_note"][1].startswith("$ANSIBLE_VAULT;1.2;AES256;prod"), "templated from a vaulted value"
    assert kms["ansible_user"][1].startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert kms["kmsadmin_site_token"][1].startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert kms["site_port"] == 5986, "a number of a vaulted file stays a number"
    assert client["ansible_host"] == "127.0.0.1" and client["ansible_connection"] == "psrp"
    assert client["ansible_user"] == doc["all"]["children"]["clients"]["hosts"]["client001"]["ansible_user"]

    # ansible-core decrypts the exported project's values back to the originals
    names = ["ansible_password", "winrm_note", "ansible_user", "kmsadmin_site_token", "ansible_host"]
    tree = tmp_path / "tree"
    ran = ansible_in(
        out,
        "ansible",
        *("kms01,client001", "-i", "inventory.yml", *vault_args, "-m", "ansible.builtin.debug"),
        *("-a", "msg={{ [" + ", ".join(f"{n} | default(none)" for n in names) + "] }}", "-t", str(tree)),
        tmp=tmp_path,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    got = {host: json.loads((tree / host).read_text())["msg"] for host in ("kms01", "client001")}
    assert got["kms01"] == [
        secrets["winrm"],
        f"pw {secrets['winrm']}",
        secrets["user"],
        secrets["token"],
        "127.0.0.1",
    ]
    assert got["client001"][0] == secrets["winrm"] and got["client001"][2] == client["ansible_user"]


def _ansible_decrypted(value: Any, tmp: Path, vault_args: list[str]) -> Any:
    """ansible-inventory's ``{"__ansible_vault": ...}`` values decrypted by the real ansible-vault."""
    if isinstance(value, dict) and set(value) == {"__ansible_vault"}:
        sealed = tmp / f".sealed-{abs(hash(value['__ansible_vault']))}"
        sealed.write_text(value["__ansible_vault"])
        opened = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-vault"), "decrypt", *vault_args, "--output", "-"],
            input=sealed.read_text(),
            env=ansible_env(tmp),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return opened.stdout
    if isinstance(value, dict):
        return {k: _ansible_decrypted(v, tmp, vault_args) for k, v in value.items()}
    if isinstance(value, list):
        return [_ansible_decrypted(v, tmp, vault_args) for v in value]
    return value


def test_playbook_adjacent_vars_reach_the_project_as_ansible_merges_them(tmp_path: Path) -> None:
    """One YAML inventory, nothing beside it; group_vars/host_vars beside the playbook override it.

    ansible-inventory on the exported project merges the same vars per host as kmsadmin's loader did
    for the export (vaulted values vaulted in the project, decrypted by ansible-vault to the same text).
    """
    source = lab_inventory(tmp_path / "src")
    doc = yaml.safe_load(source.read_text())
    children = doc["all"]["children"]
    for group in children.values():
        for hvars in (group.get("hosts") or {}).values():
            for name in ("ansible_user", "ansible_password"):
                (hvars or {}).pop(name, None)
    doc["all"]["vars"] = {"ansible_user": "inv-user", "ansible_password": "inv-password", "site": "inv"}
    children["kms_hosts"]["hosts"]["kms01"]["ansible_user"] = "kms-inv-user"  # host var: beats group_vars
    inv_dir = tmp_path / "inv"
    inv_dir.mkdir()
    inventory = inv_dir / "hosts.yml"
    inventory.write_text(yaml.safe_dump(doc))

    book = tmp_path / "book"
    shutil.copytree(PLAYBOOKS, book)
    plain = plan_export(load_playbook(book / "site.yml"), load_inventory(inventory, playbook_dir=book))
    assert write_project(plain, tmp_path / "plain")["inventory"] == "copied", "nothing beside: a copy"
    (book / "group_vars" / "clients").mkdir(parents=True)
    (book / "host_vars").mkdir()
    (book / "group_vars" / "all.yml").write_text("ansible_user: play-user\nsite: play\n")
    client_secret = "client-Pa55-from-play-vault"
    (book / "group_vars" / "clients" / "vars.yml").write_text(
        "ansible_password: '{{ vault_client_password }}'\n"
    )
    (book / "group_vars" / "clients" / "vault.yml").write_text(
        "vault_client_password: !vault |" + vault_encrypt(tmp_path, client_secret)
    )
    (book / "host_vars" / "client001.yml").write_text("ansible_port: 5999\n")
    (book / "host_vars" / "kms01.yml").write_text("kmsadmin_fqdn: kms.play.test\nsite: kms01-play\n")
    assert not any((inv_dir / d).exists() for d in ("group_vars", "host_vars"))

    pw = tmp_path / "vault.pw"
    pw.write_text(VAULT_PASSWORD + "\n")
    vault_args = ["--vault-password-file", str(pw)]
    out = tmp_path / "project"
    proc = export_cli(book / "site.yml", inventory, out, *vault_args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inventory"] == "written with merged vars"
    for path in out.rglob("*"):
        if path.is_file():
            assert client_secret.encode() not in path.read_bytes(), (
                f"the vaulted secret in plain text in {path}"
            )

    # what kmsadmin's loader computed for this run (the export loads it the same way)
    from kmsadmin.fleet.vault import load_secrets

    ours = load_inventory(inventory, vault=load_secrets([pw], [], env={}), playbook_dir=book.resolve())
    expected = json.loads(json.dumps({h: dict(v) for h, v in ours.hosts.items()}))
    assert expected["client001"]["ansible_port"] == 5999, "playbook host_vars beat inventory host vars"
    assert expected["client002"]["ansible_port"] == 5985
    assert expected["client001"]["ansible_user"] == "play-user", (
        "playbook group_vars beat inventory group vars"
    )
    assert expected["client001"]["ansible_password"] == client_secret
    assert expected["kms01"]["ansible_user"] == "kms-inv-user", "inventory host vars beat playbook group_vars"
    assert expected["kms01"]["ansible_password"] == "inv-password"
    assert expected["kms01"]["kmsadmin_fqdn"] == "kms.play.test"
    assert expected["kms01"]["site"] == "kms01-play" and expected["client003"]["site"] == "play"

    listed = ansible_in(
        out, "ansible-inventory", "-i", "inventory.yml", *vault_args, "--list", "--vars", tmp=tmp_path
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert hostvars["client001"]["ansible_password"].keys() == {"__ansible_vault"}, "still vaulted"
    assert hostvars["kms01"]["ansible_password"] == "inv-password", "plain stays plain"
    got = {
        host: {
            k: v
            for k, v in _ansible_decrypted(values, tmp_path, vault_args).items()
            if k != "kmsadmin_export"
        }
        for host, values in hostvars.items()
    }
    assert got == expected


@pytest.mark.parametrize(
    "combination",
    [
        ["hosts.yml", "extra1,extra2,"],
        ["extra1,extra2,", "hosts.yml"],
        ["inv", "extra1,extra2,"],
        ["hosts.yml", "more.yml", "extra1,"],
    ],
    ids=["file+host-list", "host-list+file", "directory+host-list", "two-files+host-list"],
)
def test_a_multi_source_inventory_is_exported_with_every_host_ansible_sees(
    tmp_path: Path, combination: list[str]
) -> None:
    """Several ``-i`` (a file, a host list, a directory): the project's inventory.yml has every host.

    The real CLI exports; the real ansible-inventory lists the project: the same hosts, each with the
    vars kmsadmin's loader merged for it (``all`` vars of the file reach the host list's hosts too).
    """
    src = tmp_path / "src"
    doc = yaml.safe_load(lab_inventory(src).read_text())
    doc["all"]["vars"] = {"site": "hq", "ansible_connection": "psrp"}
    (src / "hosts.yml").write_text(yaml.safe_dump(doc))
    (src / "more.yml").write_text(
        yaml.safe_dump({"all": {"children": {"branch": {"hosts": {"branch01": {"site": "branch"}}}}}})
    )
    (src / "inv").mkdir()
    shutil.copy(src / "hosts.yml", src / "inv" / "hosts.yml")
    # beside the files (the directory has its own): several sources still say so, vars merged as Ansible does
    for base in (src, src / "inv"):
        (base / "group_vars").mkdir()
        (base / "group_vars" / "all.yml").write_text(f"zone: {base.name}\n")
        (base / "host_vars").mkdir()
        (base / "host_vars" / "extra1.yml").write_text(f"site: extra1-{base.name}\n")
    sources = [s if "," in s else str(src / s) for s in combination]
    book = tmp_path / "book"
    shutil.copytree(PLAYBOOKS, book)

    out = tmp_path / "project"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "kmsadmin", "export", "ansible", str(book / "site.yml")),
            *(a for s in sources for a in ("-i", s)),
            *("-o", str(out), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inventory"] == "merged from several sources"

    ours = load_inventory(sources, playbook_dir=book.resolve())
    expected = json.loads(json.dumps({h: dict(v) for h, v in ours.hosts.items()}))
    extras = {h for s in combination if "," in s for h in s.split(",") if h}
    assert extras and extras < set(expected), "the host list's hosts are in kmsadmin's inventory"
    assert all(expected[h]["site"] == "hq" for h in extras - {"extra1"}), "the file's all vars reach them"
    assert expected["extra1"]["site"] == f"extra1-{'inv' if 'inv' in combination else 'src'}"
    assert all(v["zone"] == ("inv" if "inv" in combination else "src") for v in expected.values())
    assert ("branch01" in expected) == ("more.yml" in combination)

    listed = ansible_in(out, "ansible-inventory", "-i", "inventory.yml", "--list", tmp=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    listing = json.loads(listed.stdout)
    hostvars = listing.pop("_meta")["hostvars"]
    listed_hosts = {h for group in listing.values() for h in group.get("hosts", ())}
    assert listed_hosts == set(expected)
    got = {
        host: {k: v for k, v in hostvars.get(host, {}).items() if k != "kmsadmin_export"}
        for host in listed_hosts
    }
    assert got == expected
