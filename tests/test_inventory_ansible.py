"""Differential test: kmsadmin reads each inventory shape exactly as ansible-core does.

For every shape, the oracle is real ansible-core from the test venv, run as a subprocess (kmsadmin
never imports it): ``ansible-inventory --list`` gives the groups, hosts and merged variables; when a
value is vaulted or templated, a one-task ``ansible-playbook`` (``debug``, no connection) prints each
host's variables as Ansible resolves them. kmsadmin's :func:`load_inventory` must give the same hosts,
the same recursive group memberships and the same variables for every host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kmsadmin.fleet.inventory import Inventory, load_inventory
from kmsadmin.fleet.vault import load_secrets

BIN = Path(sys.executable).parent
VAULT_PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "second vault id password"


def ansible_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_LOCAL_TEMP": str(tmp / ".ansible-tmp"),
            "ANSIBLE_HOME": str(tmp / ".ansible-home"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def vault_encrypt(
    tmp: Path, plain: str, *, vault_id: str | None = None, password: str = VAULT_PASSWORD
) -> str:
    """Encrypt with the real ``ansible-vault`` (format 1.1, or 1.2 with a vault id)."""
    pw = tmp / f".pw-{abs(hash(password))}"
    pw.write_text(password + "\n")
    ident = ["--vault-id", f"{vault_id}@{pw}"] if vault_id else ["--vault-password-file", str(pw)]
    if vault_id:
        ident += ["--encrypt-vault-id", vault_id]
    done = subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt_string", *ident, "--", plain],
        capture_output=True,
        text=True,
        env=ansible_env(tmp),
        timeout=120,
        check=True,
    )
    return done.stdout.split("!vault |", 1)[1]


def vault_encrypt_file(tmp: Path, path: Path) -> None:
    pw = tmp / ".pw-file"
    pw.write_text(VAULT_PASSWORD + "\n")
    subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(pw), str(path)],
        capture_output=True,
        env=ansible_env(tmp),
        timeout=120,
        check=True,
    )


@dataclass
class Shape:
    name: str
    files: Mapping[str, str]
    #: -i sources, relative to the shape directory
    sources: tuple[str, ...] = ("inv",)
    scripts: tuple[str, ...] = ()
    playbook_dir: str | None = None
    #: {"label": password} for --vault-id; "default" → --vault-password-file
    vault: Mapping[str, str] = field(default_factory=dict)
    #: files (relative) to vault-encrypt whole with the default password
    encrypt: tuple[str, ...] = ()


def _d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


INI_BASIC = _d(
    """
    # a Windows team's INI inventory
    jump01
    [kms_hosts]
    kms01 ansible_host=10.0.0.5 ansible_port=5986
    kms02:5985 ansible_password='P@ss w0rd'   # a comment after
    ; a comment line
    [clients]
    pc[01:03].corp.example lab_ip=10.1.0.1
    [clients:vars]
    ansible_user=CORP\\admin
    z=5
    w=yes
    q="two words"
    [windows:children]
    kms_hosts
    clients
    [windows:vars]
    ansible_connection=psrp
    """
)

SHAPES: list[Shape] = [
    Shape("ini-groups-children-vars", {"inv": INI_BASIC}),
    Shape(
        "ini-typed-values",
        {
            "inv.ini": _d(
                """
                [g]
                h1 a=1 b=1.5 c=True d="[1, 2]" e="{'k': 'v'}" f=0x10 g=010 h='' i=None j=(1,2) k=abc l="x y"
                [g:vars]
                m=42
                n=['kerberos', 'ntlm']
                o=hello world
                p='quoted'
                """
            )
        },
        sources=("inv.ini",),
    ),
    Shape(
        "ini-ranges-letters-stride",
        {
            "inv": _d(
                """
                [a]
                web-[a:c]
                pc[0:10:5]
                db[01:02]-[x:y]
                """
            )
        },
    ),
    Shape(
        "ini-children-declared-later",
        {
            "inv": _d(
                """
                [top:children]
                mid
                [mid:children]
                leaf
                [leaf]
                h1 x=leaf
                [mid]
                h2
                [mid:vars]
                x=mid
                [top:vars]
                x=top
                y=top
                """
            )
        },
    ),
    Shape(
        "ini-host-in-several-groups",
        {
            "inv": _d(
                """
                h0
                [a]
                h1 v=1
                h0
                [b]
                h1 v=2 w=b
                [a:vars]
                s=a
                [b:vars]
                s=b
                """
            )
        },
    ),
    Shape(
        "yaml-nested-children-precedence",
        {
            "inv.yml": _d(
                """
                all:
                  vars: {level: all, only_all: 1}
                  hosts:
                    jump01:
                  children:
                    clients:
                      vars: {level: clients, site: none}
                      children:
                        berlin:
                          vars: {level: berlin, site: ber}
                          hosts:
                            pc-ber-[01:02]:
                        paris:
                          vars: {site: par}
                          hosts:
                            pc-par-01: {level: host}
                    servers:
                      hosts:
                        kms01: {ansible_host: 10.0.0.5}
                """
            )
        },
        sources=("inv.yml",),
    ),
    Shape(
        "group-priority",
        {
            "inv.yml": _d(
                """
                all:
                  children:
                    z_low:
                      vars: {x: z_low, ansible_group_priority: 1}
                      hosts: {h1: }
                    a_high:
                      vars: {x: a_high, ansible_group_priority: 10}
                      hosts: {h1: }
                    m_mid:
                      vars: {y: m_mid}
                      hosts: {h1: }
                    b_same:
                      vars: {y: b_same}
                      hosts: {h1: }
                """
            )
        },
        sources=("inv.yml",),
    ),
    Shape(
        "depth-beats-name",
        {
            "inv": _d(
                """
                [aaa]
                h1
                [zzz:children]
                aaa
                [aaa:vars]
                x=child
                [zzz:vars]
                x=parent
                """
            )
        },
    ),
    Shape(
        "ini-group-vars-host-vars-beside",
        {
            "inv/hosts": INI_BASIC,
            "inv/group_vars/all.yml": "site: hq\nansible_port: 5985\n",
            "inv/group_vars/clients.yml": "site: branch\nz: 6\n",
            "inv/group_vars/kms_hosts": "role: kms\n",
            "inv/host_vars/kms01.yml": "ansible_port: 5999\nrole: primary\n",
            "inv/host_vars/pc01.corp.example.yaml": "site: laptop\n",
        },
        sources=("inv/hosts",),
    ),
    Shape(
        "group-vars-all-beats-inventory-group-vars",
        {
            "inv/hosts": "[g]\nh1\n[g:vars]\nx=from_ini_group\ny=from_ini_group\n[all:vars]\nz=ini_all\n",
            "inv/group_vars/all.yml": "x: from_group_vars_all\nz: gv_all\n",
        },
        sources=("inv/hosts",),
    ),
    Shape(
        "group-vars-directories",
        {
            "inv/inventory.yml": "all:\n  children:\n    web:\n      hosts:\n        w1:\n",
            "inv/group_vars/all/10-main.yml": "a: 1\nb: 1\n",
            "inv/group_vars/all/20-more.yaml": "b: 2\nc: 2\n",
            "inv/group_vars/all/sub/30-deep.json": '{"c": 3, "d": 3}',
            "inv/group_vars/all/notes.txt": "e: ignored\n",
            "inv/group_vars/all/.hidden.yml": "f: hidden\n",
            "inv/group_vars/web/main.yml": "a: web\n",
            "inv/group_vars/web.yml": "g: file_ignored_when_dir_exists\n",
        },
        sources=("inv/inventory.yml",),
    ),
    Shape(
        "inventory-directory-several-sources",
        {
            "inv/01-base.ini": "[kms_hosts]\nkms01\n[kms_hosts:vars]\nx=ini\n",
            "inv/02-more.yml": "all:\n  children:\n    kms_hosts:\n      hosts:\n        kms02: {x: yaml}\n",
            "inv/03-noext": "[clients]\npc1\n",
            "inv/readme.md": "not an inventory\n",
            "inv/settings.cfg": "[x]\nnot_a_host\n",
            "inv/sub/04-nested.yaml": "all:\n  hosts:\n    nested1:\n",
            "inv/group_vars/kms_hosts.yml": "y: dir_gv\n",
            "inv/host_vars/pc1": "z: hv\n",
        },
    ),
    Shape(
        "several-i-options",
        {
            "a/hosts": "[g]\nh1 x=a\n[g:vars]\nv=a\n",
            "a/group_vars/all.yml": "from_a: 1\nshared: a\n",
            "b/hosts.yml": "all:\n  children:\n    g:\n      hosts:\n        h2:\n        h1: {x: b}\n",
            "b/group_vars/all.yml": "from_b: 1\nshared: b\n",
            "b/group_vars/g.yml": "gv: b\n",
        },
        sources=("a/hosts", "b/hosts.yml"),
    ),
    Shape(
        "playbook-adjacent-group-vars",
        {
            "inv/hosts": "[g]\nh1\nh2\n",
            "inv/group_vars/all.yml": "a: inv_all\nb: inv_all\n",
            "inv/group_vars/g.yml": "c: inv_g\n",
            "play/group_vars/all.yml": "a: play_all\n",
            "play/group_vars/g.yml": "c: play_g\nd: play_g\n",
            "play/host_vars/h2.yml": "d: play_h2\n",
        },
        sources=("inv/hosts",),
        playbook_dir="play",
    ),
    Shape(
        "dynamic-script-with-meta",
        {
            "inv.py": _d(
                """
                #!/usr/bin/env python3
                import json, sys
                if sys.argv[1] == "--list":
                    print(json.dumps({
                        "kms_hosts": {"hosts": ["kms01"], "vars": {"ansible_port": 5986}},
                        "clients": {"hosts": ["pc1", "pc2"], "children": ["kms_hosts"]},
                        "legacy": ["old1"],
                        "_meta": {"hostvars": {"kms01": {"ansible_host": "10.0.0.5"}, "pc1": {"x": 1}}},
                    }))
                else:
                    print("{}")
                """
            )
        },
        sources=("inv.py",),
        scripts=("inv.py",),
    ),
    Shape(
        "dynamic-script-host-calls",
        {
            "inv.sh": _d(
                """
                #!/bin/sh
                if [ "$1" = "--list" ]; then
                  echo '{"windows": {"hosts": ["w1", "w2"], "vars": {"g": 1}}}'
                else
                  echo "{\\"who\\": \\"$2\\", \\"ansible_host\\": \\"$2.lab\\"}"
                fi
                """
            ),
            "group_vars/windows.yml": "from_gv: yes\n",
        },
        sources=("inv.sh",),
        scripts=("inv.sh",),
    ),
    Shape(
        "vault-inline-value",
        {
            "inv/hosts.yml": _d(
                """
                all:
                  hosts:
                    kms01:
                      ansible_password: !vault |
                        @@VAULT:Lab-P@ss1@@
                      plain: ok
                """
            )
        },
        sources=("inv/hosts.yml",),
        vault={"default": VAULT_PASSWORD},
    ),
    Shape(
        "vault-group-vars-all-vault-yml",
        {
            "inv/hosts": "[windows]\nw1 ansible_host=127.0.0.1\nw2\n",
            "inv/group_vars/all/vars.yml": "ansible_user: lab\\admin\nansible_password: '{{ vault_lab_password }}'\n",
            "inv/group_vars/all/vault.yml": "vault_lab_password: !vault |\n  @@VAULT:S3cret!Lab@@\n",
        },
        sources=("inv/hosts",),
        vault={"default": VAULT_PASSWORD},
    ),
    Shape(
        "vault-whole-file",
        {
            "inv/hosts.yml": "all:\n  hosts:\n    h1:\n    h2:\n",
            "inv/group_vars/all.yml": "ansible_password: whole-file-secret\nansible_user: admin\n",
        },
        sources=("inv/hosts.yml",),
        vault={"default": VAULT_PASSWORD},
        encrypt=("inv/group_vars/all.yml",),
    ),
    Shape(
        "vault-ids-format-1-2",
        {
            "inv/hosts.yml": _d(
                """
                all:
                  vars:
                    a: !vault |
                      @@VAULT:from-prod@prod@@
                    b: !vault |
                      @@VAULT:from-dev@dev@@
                  hosts:
                    h1:
                """
            )
        },
        sources=("inv/hosts.yml",),
        vault={"dev": OTHER_PASSWORD, "prod": VAULT_PASSWORD},
    ),
    Shape(
        "templated-vars",
        {
            "inv/hosts": _d(
                """
                [lab]
                h1 lab_ip=10.9.0.1
                h2 lab_ip=10.9.0.2 ansible_port="{{ base_port | int + 1 }}"
                [lab:vars]
                ansible_host="{{ lab_ip }}"
                base_port=5985
                ansible_port="{{ base_port }}"
                fqdn="{{ inventory_hostname | upper }}.CORP"
                mode="{{ missing_var | default('ntlm') }}"
                secure="{{ 'yes' | bool }}"
                low="{{ 'ABC' | lower | replace('b', 'x') }}"
                """
            )
        },
        sources=("inv/hosts",),
    ),
    Shape(
        "templated-hostvars-and-groups",
        {
            "inv.yml": _d(
                """
                all:
                  children:
                    kms_hosts:
                      hosts:
                        kms01: {ansible_host: 10.0.0.5}
                    clients:
                      vars:
                        kms_target: "{{ hostvars['kms01'].ansible_host }}"
                        first_kms: "{{ groups['kms_hosts'][0] }}"
                        chain: "{{ kms_target }}:1688"
                      hosts:
                        pc1:
                """
            )
        },
        sources=("inv.yml",),
    ),
    Shape(
        "winrm-transport-list",
        {
            "inv": "[w]\nh1 ansible_winrm_transport=['kerberos','ntlm']\nh2\n[w:vars]\nansible_winrm_transport=ntlm\n"
        },
    ),
    Shape(
        "json-list-output-as-yaml-file",
        {
            "inv.yml": _d(
                """
                all:
                  hosts:
                    a.example: {ansible_host: 192.0.2.1}
                  children:
                    ungrouped: {}
                    g1:
                      hosts:
                        b.example:
                """
            )
        },
        sources=("inv.yml",),
    ),
    Shape(
        "ipv6-and-ports",
        {
            "inv": _d(
                """
                [v6]
                2001:db8::1
                [2001:db8::2]:5986
                host.example:5985 x=1
                10.0.0.7:5986
                """
            )
        },
    ),
    Shape(
        "empty-groups-and-null-vars",
        {
            "inv.yml": _d(
                """
                all:
                  children:
                    empty:
                    withvars:
                      vars:
                      hosts:
                        h1:
                        h2: {}
                """
            )
        },
        sources=("inv.yml",),
    ),
    Shape(
        "host-vars-override-everything",
        {
            "inv/hosts": "[g]\nh1 x=inventory_host\n[g:vars]\nx=inventory_group\n",
            "inv/group_vars/g.yml": "x: group_vars_g\n",
            "inv/host_vars/h1/a.yml": "x: host_vars_dir\ny: 1\n",
        },
        sources=("inv/hosts",),
    ),
]


# ------------------------------------------------------------------------------------------ harness
def _materialise(shape: Shape, root: Path) -> None:
    for rel, source in shape.files.items():
        text = source
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        while "@@VAULT:" in text:
            start = text.index("@@VAULT:")
            end = text.index("@@", start + 8)
            spec = text[start + 8 : end]
            plain, vault_id = spec, ""
            if "@" in spec and spec.rsplit("@", 1)[1] in shape.vault:
                plain, vault_id = spec.rsplit("@", 1)
            password = shape.vault.get(vault_id or "default", VAULT_PASSWORD)
            blob = vault_encrypt(root, plain, vault_id=vault_id or None, password=password)
            indent = text[:start].rsplit("\n", 1)[1]
            lines = [line.strip() for line in blob.strip().splitlines()]
            text = text[:start] + ("\n" + indent).join(lines) + text[end + 2 :]
        path.write_text(text)
    for rel in shape.scripts:
        (root / rel).chmod(0o755)
    for rel in shape.encrypt:
        vault_encrypt_file(root, root / rel)


def _vault_args(shape: Shape, root: Path) -> tuple[list[str], list[Path], list[str]]:
    args: list[str] = []
    files: list[Path] = []
    ids: list[str] = []
    for label, password in shape.vault.items():
        pw = root / f".vault-{label}"
        pw.write_text(password + "\n")
        if label == "default":
            args += ["--vault-password-file", str(pw)]
            files.append(pw)
        else:
            args += ["--vault-id", f"{label}@{pw}"]
            ids.append(f"{label}@{pw}")
    return args, files, ids


def _needs_templating(value: Any) -> bool:
    if isinstance(value, dict):
        return "__ansible_vault" in value or any(_needs_templating(v) for v in value.values())
    if isinstance(value, list):
        return any(_needs_templating(v) for v in value)
    return isinstance(value, str) and "{{" in value


def ansible_oracle(shape: Shape, root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """(host → vars, group → recursive hosts) as ansible-core 2.19 resolves them."""
    env = ansible_env(root)
    vault_args, _, _ = _vault_args(shape, root)
    sources = [a for s in shape.sources for a in ("-i", str(root / s))]
    play = ["--playbook-dir", str(root / shape.playbook_dir)] if shape.playbook_dir else []
    listed = subprocess.run(
        [str(BIN / "ansible-inventory"), *sources, *vault_args, *play, "--list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})

    def members(group: str, seen: set[str]) -> set[str]:
        if group in seen:
            return set()
        seen.add(group)
        entry = data.get(group, {})
        found = set(entry.get("hosts", []))
        for child in entry.get("children", []):
            found |= members(child, seen)
        return found

    groups = {g: members(g, set()) for g in data if g != "_meta"}
    for group in list(groups):
        if not groups[group]:
            del groups[group]
    all_hosts = groups.get("all", set())
    for host in all_hosts:
        hostvars.setdefault(host, {})
    if any(_needs_templating(v) for hv in hostvars.values() for v in hv.values()):
        names_file = root / ".oracle-names.json"
        names_file.write_text(json.dumps({"oracle_names": {h: sorted(v) for h, v in hostvars.items()}}))
        tree = root / ".oracle-tree"
        expression = "{{ dict(oracle_names[inventory_hostname] | zip(query('vars', *oracle_names[inventory_hostname]))) }}"
        ran = subprocess.run(
            [
                str(BIN / "ansible"),
                "all",
                *sources,
                *vault_args,
                *play,
                "-m",
                "ansible.builtin.debug",
                "-a",
                f"msg={expression}",
                "-e",
                f"@{names_file}",
                "-t",
                str(tree),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=300,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        hostvars = {h: json.loads((tree / h).read_text())["msg"] for h in hostvars}
    return hostvars, groups


def kmsadmin_view(shape: Shape, root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    _, files, ids = _vault_args(shape, root)
    inventory: Inventory = load_inventory(
        [root / s for s in shape.sources],
        vault=load_secrets(files, ids, env={}),
        playbook_dir=(root / shape.playbook_dir) if shape.playbook_dir else None,
        env={},
    )
    hostvars = json.loads(json.dumps({h: dict(v) for h, v in inventory.hosts.items()}))
    groups = {g: set(m) for g, m in inventory.groups.items() if m}
    return hostvars, groups


def test_there_are_at_least_25_shapes() -> None:
    assert len(SHAPES) >= 25
    assert len({s.name for s in SHAPES}) == len(SHAPES)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_kmsadmin_reads_the_shape_like_ansible_core(shape: Shape, tmp_path: Path) -> None:
    _materialise(shape, tmp_path)
    expected_vars, expected_groups = ansible_oracle(shape, tmp_path)
    got_vars, got_groups = kmsadmin_view(shape, tmp_path)
    assert sorted(got_vars) == sorted(expected_vars)
    for host in expected_vars:
        assert got_vars[host] == expected_vars[host], host
    assert got_groups == expected_groups
