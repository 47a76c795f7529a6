"""Bad and hostile inventories: each ends with exit 2 and a message naming the file, line or variable.

No traceback, no MemoryError, no hang, and no host contacted: every inventory points its hosts at a
listening loopback socket, which must not have seen a connection when the command ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmsadmin.cli.app import app
from kmsadmin.fleet.inventory import InventoryError, load_inventory
from kmsadmin.fleet.vault import VaultSecret, VaultSecrets, decrypt, decrypt_with, encrypt, load_secrets

BIN = Path(sys.executable).parent
PASSWORD = "vault pass for the tests"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that records whether anything connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def contacted(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def encrypt_string(tmp: Path, plain: str, password: str = PASSWORD) -> list[str]:
    pw = tmp / ".enc-pw"
    pw.write_text(password)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_HOME"] = str(tmp / ".ansible-home")
    env["PYTHONWARNINGS"] = "ignore"
    done = subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(pw), "--", plain],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return [line.strip() for line in done.stdout.split("!vault |", 1)[1].strip().splitlines()]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"KMSADMIN_PASSWORD": "x", **(env or {})})
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    return result.exit_code, result.stdout + result.stderr


def _pw_file(tmp: Path, password: str = PASSWORD) -> Path:
    path = tmp / "vault-pass"
    path.write_text(password + "\n")
    return path


def _target(sock: socket.socket) -> str:
    return f"ansible_host=127.0.0.1 ansible_port={sock.getsockname()[1]}"


def _case_truncated_vault(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts").write_text(f"[w]\nw1 {_target(sock)}\n")
    lines = encrypt_string(tmp, "Lab-P@ss1")
    (tmp / "group_vars").mkdir()
    (tmp / "group_vars" / "all.yml").write_text(
        "ansible_user: lab\nansible_password: !vault |\n" + "".join(f"  {line}\n" for line in lines[:3])
    )
    return ["--vault-password-file", str(_pw_file(tmp))], ["all.yml line 2", "ansible_password", "truncated"]


def _case_wrong_password(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts").write_text(f"[w]\nw1 {_target(sock)}\n")
    lines = encrypt_string(tmp, "Lab-P@ss1")
    (tmp / "group_vars").mkdir()
    (tmp / "group_vars" / "all.yml").write_text(
        "ansible_password: !vault |\n" + "".join(f"  {line}\n" for line in lines)
    )
    pw = _pw_file(tmp, "not the password")
    return ["--vault-password-file", str(pw)], ["all.yml line 1", "ansible_password", "wrong password"]


def _case_no_password(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    lines = encrypt_string(tmp, "Lab-P@ss1")
    (tmp / "hosts.yml").write_text(
        "all:\n  hosts:\n    w1:\n      ansible_host: 127.0.0.1\n"
        f"      ansible_port: {sock.getsockname()[1]}\n"
        "      ansible_password: !vault |\n" + "".join(f"        {line}\n" for line in lines)
    )
    return [], ["hosts.yml line 6", "ansible_password", "--vault-password-file"]


def _script(tmp: Path, body: str) -> None:
    path = tmp / "hosts"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _case_script_exits_1(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    _script(tmp, "echo 'cmdb unreachable: connection refused' >&2\nexit 1\n")
    return [], ["hosts", "exited 1", "cmdb unreachable"]


def _case_script_not_json(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    _script(tmp, "echo '<html>login</html>'\n")
    return [], ["hosts", "--list", "did not print JSON"]


def _case_children_cycle(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts").write_text(f"[a]\nw1 {_target(sock)}\n[b]\n[a:children]\nb\n[b:children]\na\n")
    return [], ["hosts line 1", "group cycle: a → b → a"]


def _case_undefined_template(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    port = sock.getsockname()[1]
    (tmp / "hosts").write_text(
        f'[w]\nw1 ansible_port={port} ansible_host="{{{{ lab_ipp }}}}" lab_ip=127.0.0.1\n'
    )
    return [], ["w1", "ansible_host", "'lab_ipp' is undefined"]


def _case_unknown_filter(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    port = sock.getsockname()[1]
    (tmp / "hosts").write_text(
        f"[w]\nw1 ansible_port={port} ansible_host=\"{{{{ lookup('pipe', 'id') }}}}\"\n"
    )
    return [], ["w1", "ansible_host", "'lookup' is undefined"]


def _case_alias_bomb(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp / "hosts.yml").write_text(
        "all:\n  vars:\n"
        + "".join(f"    {line}\n" for line in levels)
        + f"  hosts:\n    w1:\n      ansible_port: {sock.getsockname()[1]}\n      ansible_host: *a8\n"
    )
    return [], ["hosts.yml", "alias bomb"]


def _case_huge_range(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts").write_text(f"[w]\nh[00000000:99999999] {_target(sock)}\n")
    return [], ["hosts line 2", "more than 100000 hosts"]


def _case_port_70000(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts.yml").write_text("all:\n  hosts:\n    w1: {ansible_host: 127.0.0.1, ansible_port: 70000}\n")
    return [], ["hosts.yml line 3", "w1", "ansible_port", "1 to 65535"]


def _case_list_host(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    port = sock.getsockname()[1]
    (tmp / "hosts.yml").write_text(
        f"all:\n  hosts:\n    w1: {{ansible_host: [127.0.0.1], ansible_port: {port}}}\n"
    )
    return [], ["hosts.yml line 3", "w1", "ansible_host", "not a list"]


def _case_nul_host(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    port = sock.getsockname()[1]
    (tmp / "hosts.yml").write_text(
        f'all:\n  hosts:\n    w1: {{ansible_host: "127.0.0.1\\0x", ansible_port: {port}}}\n'
    )
    return [], ["hosts.yml line 3", "w1", "ansible_host", "is not a host name or address"]


def _case_plugin_file(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts.yml").write_text("plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n")
    return [], ["hosts.yml line 1", "ansible-inventory -i hosts.yml --list --output inv.json"]


def _case_undefined_child(tmp: Path, sock: socket.socket) -> tuple[list[str], list[str]]:
    (tmp / "hosts").write_text(f"[a]\nw1 {_target(sock)}\n[a:children]\nmissing_group\n")
    return [], ["hosts line 4", "undefined group 'missing_group'"]


CASES = {
    "truncated vault": _case_truncated_vault,
    "wrong vault password": _case_wrong_password,
    "vault without a password": _case_no_password,
    "script exits 1": _case_script_exits_1,
    "script prints non-JSON": _case_script_not_json,
    "cycle in children": _case_children_cycle,
    "template with an undefined variable": _case_undefined_template,
    "template with a function outside the sandbox": _case_unknown_filter,
    "YAML alias bomb as ansible_host": _case_alias_bomb,
    "host range h[00000000:99999999]": _case_huge_range,
    "ansible_port: 70000": _case_port_70000,
    "a list as ansible_host": _case_list_host,
    "NUL in ansible_host": _case_nul_host,
    "plugin inventory file": _case_plugin_file,
    "children naming an undefined group": _case_undefined_child,
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("command", ["status", "rollout"])
def test_bad_inventory_exits_2_naming_the_place_and_contacts_no_host(
    name: str, command: str, tmp_path: Path, listener: socket.socket
) -> None:
    extra, expected = CASES[name](tmp_path, listener)
    source = tmp_path / ("hosts.yml" if (tmp_path / "hosts.yml").exists() else "hosts")
    playbook = Path(__file__).parent.parent / "playbooks" / "site.yml"
    args = (
        ["status", "-i", str(source)]
        if command == "status"
        else ["rollout", str(playbook), "-i", str(source)]
    )
    started = time.monotonic()
    code, output = run(*args, *extra, "--http", "--auth", "ntlm", "--user", "lab\\admin")
    assert code == 2, output
    assert "Traceback" not in output and "MemoryError" not in output and "TypeError" not in output
    for part in expected:
        assert part in output, (part, output)
    assert not contacted(listener)
    assert time.monotonic() - started < 30


def test_dev_zero_as_inventory_is_refused_quickly() -> None:
    started = time.monotonic()
    code, output = run("status", "-i", "/dev/zero")
    assert code == 2, output
    assert "zero" in output and "larger than 16 MiB" in output
    assert time.monotonic() - started < 10


def test_a_backtracking_limit_regex_is_stopped(tmp_path: Path, listener: socket.socket) -> None:
    from kmsadmin.fleet.limit import REGEX_TIMEOUT

    (tmp_path / "hosts").write_text(f"[w]\n{'a' * 40}b {_target(listener)}\n{'a' * 40} {_target(listener)}\n")
    playbook = Path(__file__).parent.parent / "playbooks" / "site.yml"
    started = time.monotonic()
    code, output = run(
        "rollout", str(playbook), "-i", str(tmp_path / "hosts"), "--limit", "~(a+)+$", "--check"
    )
    elapsed = time.monotonic() - started
    assert code == 2, output
    assert "took more than" in output and "(a+)+$" in output
    assert elapsed < REGEX_TIMEOUT + 10
    assert not contacted(listener)


def test_a_linear_regex_limit_still_selects(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[w]\npc-ber-01\npc-par-01\nkms01\n")
    inventory = load_inventory(tmp_path / "hosts")
    assert inventory.select("~pc-(ber|par)-0[1-9]") == ["pc-ber-01", "pc-par-01"]


@pytest.mark.parametrize("command", ["status", "doctor", "convert-client"])
def test_unknown_host_or_pattern_exits_2_with_close_matches(command: str, tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[kms_hosts]\nkms01\nkms02\n[clients]\npc01\n")
    code, output = run(command, "-i", str(tmp_path / "hosts"), "kms_host")
    assert code == 2, output
    assert "'kms_host' matches no host" in output and "did you mean: kms_hosts" in output
    code, output = run(command, "-i", str(tmp_path / "hosts"), "kms03")
    assert code == 2 and "kms01" in output, output


def test_status_with_a_typo_among_patterns_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[kms_hosts]\nkms01\n[clients]\npc01\n")
    code, output = run("status", "-i", str(tmp_path / "hosts"), "clients", "clints")
    assert code == 2 and "'clints'" in output and "did you mean: clients" in output, output


def test_vault_secret_never_appears_in_errors(tmp_path: Path) -> None:
    lines = encrypt_string(tmp_path, "Very-Secret-1")
    text = "$ANSIBLE_VAULT;1.1;AES256\n" + "\n".join(lines[1:])
    assert decrypt(text, load_secrets([_pw_file(tmp_path)], env={}), "x") == "Very-Secret-1"
    with pytest.raises(InventoryError.__mro__[2]) as info:  # KmsAdminError
        decrypt(text, VaultSecrets(), "hosts.yml line 3: variable 'p'")
    assert "Very-Secret" not in str(info.value) and PASSWORD not in str(info.value)


def test_ansible_vault_password_file_env_and_vault_id(tmp_path: Path) -> None:
    pw = _pw_file(tmp_path)
    secrets = load_secrets(env={"ANSIBLE_VAULT_PASSWORD_FILE": str(pw)})
    assert [s.label for s in secrets.secrets] == ["default"]
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
    script.chmod(0o755)
    secrets = load_secrets(vault_ids=[f"prod@{script}"], env={})
    assert secrets.secrets[0].label == "prod" and secrets.secrets[0].password == PASSWORD.encode()
    assert PASSWORD not in repr(secrets)


def test_encrypt_writes_vault_1_1_and_1_2_that_ansible_vault_decrypts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_HOME": str(tmp_path / ".ansible-home"), "PYTHONWARNINGS": "ignore"})
    pw = _pw_file(tmp_path)
    for label, header in (
        ("default", "$ANSIBLE_VAULT;1.1;AES256\n"),
        ("prod", "$ANSIBLE_VAULT;1.2;AES256;prod\n"),
    ):
        secret = VaultSecret(label=label, password=PASSWORD.encode(), source=str(pw))
        text = encrypt("Pässword with 'quotes' 12345", secret)
        assert text.startswith(header) and all(len(line) <= 80 for line in text.splitlines())
        assert encrypt("Pässword with 'quotes' 12345", secret) != text, "a fresh salt per value"
        assert decrypt_with(text, VaultSecrets((secret,)), "x") == ("Pässword with 'quotes' 12345", secret)
        vaulted = tmp_path / f"{label}.vault"
        vaulted.write_text(text)
        ident = ["--vault-id", f"{label}@{pw}"]
        done = subprocess.run(
            [str(BIN / "ansible-vault"), "decrypt", *ident, "--output", "-", str(vaulted)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Pässword with 'quotes' 12345"


def test_the_inventory_remembers_which_texts_came_from_vault(tmp_path: Path) -> None:
    pw = _pw_file(tmp_path)
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts").write_text("[w]\nw1 ansible_user=ini-vaulted-user ansible_port=5986\n")
    (tmp_path / "inv" / "plain.yml").write_text("all:\n  hosts:\n    w2:\n      ansible_user: plain-user\n")
    secret = VaultSecret(label="default", password=PASSWORD.encode(), source=str(pw))
    (tmp_path / "inv" / "hosts").write_text(encrypt((tmp_path / "inv" / "hosts").read_text(), secret))
    (tmp_path / "inv" / "group_vars").mkdir()
    lines = encrypt_string(tmp_path, "inline-secret")
    (tmp_path / "inv" / "group_vars" / "all.yml").write_text(
        "p: !vault |\n" + "".join(f"  {line}\n" for line in lines) + "q: '{{ p }}'\n"
    )
    inv = load_inventory(tmp_path / "inv", vault=load_secrets([pw], env={}), env={})
    assert inv.hosts["w1"]["ansible_user"] == "ini-vaulted-user" and inv.hosts["w2"]["q"] == "inline-secret"
    assert set(inv.vaulted) == {"ini-vaulted-user", "inline-secret"}, "not plain-user, not the port"
    assert inv.templated == {"w1": frozenset({"q"}), "w2": frozenset({"q"})}


def test_unsupported_ansible_vars_warned_once(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text(
        "[w]\nw1 ansible_become=yes ansible_become_user=admin\nw2 ansible_become=yes\n"
        "[w:vars]\nansible_delegate_to=other\nansible_connection=psrp\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "kmsadmin", "status", "-i", str(tmp_path / "hosts"), "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert sorted(warnings) == sorted(
        f"kmsadmin: warning: inventory variable {name} is not supported by kmsadmin and is ignored"
        for name in ("ansible_become", "ansible_become_user", "ansible_delegate_to")
    )


def test_vault_secrets_combine_like_ansible(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.write_text("one\n")
    second = tmp_path / "second"
    second.write_text("two\n")
    secrets = load_secrets(
        [first],
        ["prod@" + str(second)],
        env={"ANSIBLE_VAULT_PASSWORD_FILE": str(second), "ANSIBLE_VAULT_IDENTITY_LIST": f"dev@{first}"},
    )
    assert [(s.label, s.password) for s in secrets.secrets] == [
        ("dev", b"one"),
        ("prod", b"two"),
        ("default", b"one"),
        ("default", b"two"),
    ]
    assert next(s.label for s in secrets.ordered_for("prod")) == "prod"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("sleep 30\n", "did not finish in 2 s"),
        ("yes '{\"a\": 1}'\n", "printed more than"),
        ("exec 1>&-; sleep 30\n", "did not finish in 2 s"),
    ],
    ids=["hangs", "prints without end", "closes stdout then hangs"],
)
def test_a_script_that_hangs_or_floods_is_stopped(
    body: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kmsadmin.fleet.inventory as inventory_module

    monkeypatch.setattr(inventory_module, "SCRIPT_TIMEOUT", 2.0)
    monkeypatch.setattr(inventory_module, "MAX_SCRIPT_OUTPUT", 1024 * 1024)
    _script(tmp_path, body)
    started = time.monotonic()
    with pytest.raises(InventoryError, match=expected):
        load_inventory(tmp_path / "hosts", env={})
    assert time.monotonic() - started < 10


def test_messages_name_every_source_host_lists_included(tmp_path: Path) -> None:
    # a host list longer than a file name may be (255 bytes) is a host list, not an OSError
    from kmsadmin.fleet.limit import PatternError, select_each

    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    pc001: {}\n")
    long_list = ",".join(f"extra{i:03d}" for i in range(40)) + ","
    inventory = load_inventory([hosts, "extra1,extra2,", long_list])
    described = inventory.described()
    assert described.startswith(f"{hosts}, host list 'extra1,extra2,', host list 'extra000,")
    assert described.endswith("...'") and len(described) < len(str(hosts)) + 120
    with pytest.raises(PatternError) as refused:
        select_each(inventory, ["nosuchhost"])
    assert "host list 'extra1,extra2,'" in str(refused.value) and str(hosts) in str(refused.value)
    # a path too long for the file system is the inventory's error, not a traceback
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(["x" * 300])
