"""DNS for KMS: the ``_vlmcs._tcp`` SRV records KMS clients use to find their hosts.

Microsoft's KMS host documentation (kms-create-host, "DNS SRV record") gives the record: service
``_vlmcs``, protocol ``_tcp``, priority 0, weight 0, port 1688, host name = the KMS host's FQDN.
A KMS host publishes it itself by dynamic update once every 24 hours unless publishing is off
(common-troubleshooting-procedures-kms-dns). Clients query ``_vlmcs._tcp.<their DNS domain>``.

Modules:

* :mod:`kmsadmin.dns.records` — the SRV record value, zone-file and nsupdate output;
* :mod:`kmsadmin.dns.tsig` — BIND ``key`` files for TSIG-signed dynamic updates;
* :mod:`kmsadmin.dns.resolver` — SRV / address queries with dnspython (UDP, TCP fallback) and port probes;
* :mod:`kmsadmin.dns.update` — RFC 2136 dynamic updates (add / remove an SRV record);
* :mod:`kmsadmin.dns.check` — the health check behind ``kmsadmin dns check``;
* :mod:`kmsadmin.dns.fleetview` — what an inventory says about KMS hosts and client DNS domains;
* :mod:`kmsadmin.dns.remote` — the Windows-side steps (``dns-srv-record``, ``kms-dns-publish-list``,
  ``kms-host-settings``) as :class:`~kmsadmin.values.ScriptRef` values, and running them.

This layer sits between fleet and operations (it may use catalog, facts, render and transports); it
never imports the lab, the CLI or rich/typer.
"""

from __future__ import annotations

#: service and protocol labels of the KMS SRV record (kms-create-host, "DNS SRV record")
SRV_PREFIX = "_vlmcs._tcp"
#: "By default, a KMS host is configured to use TCP on port 1688" (kms-activation-planning)
DEFAULT_KMS_PORT = 1688
#: the DNS port
DNS_PORT = 53
#: a modest TTL; Windows KMS hosts re-register every 24 hours (common-troubleshooting-procedures-kms-dns)
DEFAULT_TTL = 3600
