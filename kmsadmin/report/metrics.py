"""OpenMetrics text of a status run, for node_exporter's textfile collector or a Pushgateway.

Built with ``prometheus_client`` (its own registry and OpenMetrics exposition; label values are escaped
by the library, so host-supplied names cannot break the format). Metrics:

* ``kmsadmin_host_read`` (1: facts read, 0: the host could not be read) per host;
* ``kmsadmin_host_activated`` (1: every volume product Licensed) per host;
* ``kmsadmin_product_license_status`` (SoftwareLicensingProduct.LicenseStatus, 0..6 [SPPWMI]) and
  ``kmsadmin_product_days_left`` (validity or grace left, days) per host and product;
* ``kmsadmin_kms_current_count`` / ``kmsadmin_kms_required_count`` per KMS host (the required count is
  the highest threshold of the clients that use it: 25 for Windows clients, else 5 [PLAN24]);
* ``kmsadmin_findings`` by kind, and ``kmsadmin_status_timestamp_seconds``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import generate_latest

from kmsadmin import catalog
from kmsadmin.operations import health


def _required(kms: health.HostView, views: Sequence[health.HostView]) -> int:
    index = dict.fromkeys(kms.fqdn_names, kms)
    thresholds = [
        catalog.threshold_for(v.edition)
        for v in views
        if v.edition is not None and health.kms_host_of(v, index) is kms
    ]
    return max(thresholds) if thresholds else catalog.ACTIVATION_RULES.client_threshold


def openmetrics(views: Sequence[health.HostView], findings: Sequence[health.Finding]) -> bytes:
    """The OpenMetrics exposition of one status run."""
    registry = CollectorRegistry(auto_describe=False)
    read = Gauge("kmsadmin_host_read", "1 if the host's facts were read", ["host"], registry=registry)
    activated = Gauge(
        "kmsadmin_host_activated", "1 if every volume product is Licensed", ["host"], registry=registry
    )
    status = Gauge(
        "kmsadmin_product_license_status",
        "SoftwareLicensingProduct.LicenseStatus (0 Unlicensed, 1 Licensed, 2 OOBGrace, ...)",
        ["host", "product", "family"],
        registry=registry,
    )
    days = Gauge(
        "kmsadmin_product_days_left",
        "days of KMS validity or grace left",
        ["host", "product", "family"],
        registry=registry,
    )
    current = Gauge(
        "kmsadmin_kms_current_count", "KeyManagementServiceCurrentCount", ["host"], registry=registry
    )
    required = Gauge(
        "kmsadmin_kms_required_count",
        "count the KMS host needs for its clients to activate",
        ["host"],
        registry=registry,
    )
    by_kind = Gauge("kmsadmin_findings", "fleet findings by kind", ["kind"], registry=registry)
    stamp = Gauge("kmsadmin_status_timestamp_seconds", "when the status was read", registry=registry)
    for view in views:
        read.labels(view.host).set(1 if view.read else 0)
        if not view.read:
            continue
        activated.labels(view.host).set(1 if view.activated() else 0)
        for product in view.products:
            if product.kms_host_key:
                continue
            status.labels(view.host, product.name, product.family).set(product.license_status)
            if product.days_left is not None:
                days.labels(view.host, product.name, product.family).set(product.days_left)
        if view.is_kms_host:
            current.labels(view.host).set(view.current_count if view.current_count is not None else -1)
            required.labels(view.host).set(_required(view, views))
    for kind in ("duplicate-cmid", "edition-not-activatable", "office-no-host-key", "below-threshold"):
        by_kind.labels(kind).set(0)
    for kind, count in health.summarize_findings(findings).items():
        by_kind.labels(kind).set(count)
    stamp.set(time.time())
    data: bytes = generate_latest(registry)  # type: ignore[no-untyped-call]
    return data


def write_metrics(views: Sequence[health.HostView], findings: Sequence[health.Finding], path: Path) -> Path:
    """Write the exposition atomically (the textfile collector must never read half a file)."""
    data = openmetrics(views, findings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
