"""The Ansible YAML inventory ``kmsadmin lab up`` writes for a running lab.

Shape::

    all:
      vars: {kmsadmin_lab: true, kmsadmin_lab_domain: lab.test}
      children:
        kms_hosts:
          hosts:
            kms01: {<connection vars>, kmsadmin_role: kms_host, kmsadmin_fqdn: kms01.lab.test,
                    kmsadmin_os: ..., kmsadmin_lab_host_key_file: <state>/keys/kms01.key,
                    kmsadmin_lab_host_key_group: windows-server-2022}
        clients:
          hosts:
            client001: {<connection vars>, kmsadmin_role: client, kmsadmin_fqdn: client001.lab.test, ...}
        servers:
          hosts:
            client007: {}

``clients`` holds every KMS client, whatever its OS; ``servers`` holds the clients that run Windows
Server (their variables are defined once, under ``clients``; Ansible merges group memberships).
KMS hosts are only in ``kms_hosts``, so a play on ``servers`` never touches a KMS host.

Connection variables per host: ``ansible_host: 127.0.0.1``, ``ansible_port``, ``ansible_user``,
``ansible_password``, ``ansible_connection: psrp``, ``ansible_psrp_protocol``, ``ansible_psrp_auth:
ntlm``, ``ansible_winrm_transport: ntlm``, ``ansible_winrm_scheme``, ``ansible_winrm_server_cert_validation``
and, over HTTPS, ``ansible_psrp_cert_validation: validate`` + ``ansible_psrp_ca_cert`` (the lab CA).
The password is the lab's generated one (``credentials.json``); the inventory file is written 0600.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.model import write_text_atomic


def _connection(fleet: Fleet, port: int, *, tls: bool, ca_cert: Path | None) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    data: dict[str, Any] = {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": fleet.username,
        "ansible_password": fleet.password,
        "ansible_connection": "psrp",
        "ansible_psrp_protocol": scheme,
        "ansible_psrp_auth": "ntlm",
        "ansible_winrm_transport": "ntlm",
        "ansible_winrm_scheme": scheme,
    }
    if tls:
        data["ansible_psrp_cert_validation"] = "validate"
        data["ansible_winrm_server_cert_validation"] = "validate"
        if ca_cert is not None:
            data["ansible_psrp_ca_cert"] = str(ca_cert)
            data["ansible_winrm_ca_trust_path"] = str(ca_cert)
    else:
        # plain HTTP: NTLM message encryption protects the bodies; there is no certificate to check
        data["ansible_winrm_server_cert_validation"] = "ignore"
        data["ansible_psrp_cert_validation"] = "ignore"
    return data


def _kerberos(entry: dict[str, Any], fqdn: str, realm: str) -> None:
    """Sign in with Kerberos: the lab administrator's principal (kmsadmin gets the ticket from the
    password, or uses one from ``kinit``), and the SPN's host name, since ``ansible_host`` is an address."""
    entry["ansible_user"] = f"{entry['ansible_user']}@{realm}"
    entry["ansible_psrp_auth"] = "kerberos"
    entry["ansible_winrm_transport"] = "kerberos"
    entry["ansible_psrp_negotiate_hostname_override"] = fqdn
    entry["ansible_winrm_kerberos_hostname_override"] = fqdn


def build_inventory(
    fleet: Fleet,
    ports: Mapping[str, int],
    *,
    tls: bool,
    ca_cert: Path | None = None,
    kerberos_realm: str | None = None,
) -> dict[str, Any]:
    """The inventory as a plain mapping; ``kerberos_realm``: hosts sign in with Kerberos in that realm."""
    kms_hosts: dict[str, Any] = {}
    clients: dict[str, Any] = {}
    servers: dict[str, Any] = {}
    for name in fleet.names():
        host = fleet.hosts[name]
        entry = _connection(fleet, ports[name], tls=tls, ca_cert=ca_cert)
        if kerberos_realm is not None:
            _kerberos(entry, host.fqdn, kerberos_realm)
        entry.update(
            {
                "kmsadmin_role": host.role,
                "kmsadmin_fqdn": host.fqdn,
                "kmsadmin_os": host.os.caption,
            }
        )
        if host.security.domain_joined:
            # a member of the lab forest (lab up --forest): plan recommends ADBA for it
            entry["kmsadmin_domain_joined"] = True
        if host.role == "kms_host":
            group = fleet.meta.kms_groups.get(name)
            if group is not None:
                entry["kmsadmin_lab_host_key_file"] = str(fleet.key_file(name))
                entry["kmsadmin_lab_host_key_group"] = group
            kms_hosts[name] = entry
        else:
            clients[name] = entry
            if host.os.is_server:
                servers[name] = {}
    return {
        "all": {
            "vars": {"kmsadmin_lab": True, "kmsadmin_lab_domain": fleet.meta.domain},
            "children": {
                "kms_hosts": {"hosts": kms_hosts},
                "clients": {"hosts": clients},
                "servers": {"hosts": servers},
            },
        }
    }


def write_inventory(
    path: Path,
    fleet: Fleet,
    ports: Mapping[str, int],
    *,
    tls: bool,
    ca_cert: Path | None = None,
    kerberos_realm: str | None = None,
) -> Path:
    """Write the inventory (mode 0600: it holds the lab password)."""
    data = build_inventory(fleet, ports, tls=tls, ca_cert=ca_cert, kerberos_realm=kerberos_realm)
    header = "# kmsadmin lab inventory (generated by `kmsadmin lab up`; holds the lab's password)\n"
    write_text_atomic(
        path, header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False), mode=0o600
    )
    return path
