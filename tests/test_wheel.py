"""The built wheel carries the templates (kmsadmin/_templates) and renders from them when installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, kmsadmin, kmsadmin.render as r
from kmsadmin.values import ScriptRef
script = r.render(ScriptRef(step="host-caching", params={"enabled": True}))
template = r.environment().get_template(r.template_name("host-caching", "ps1"))
print(json.dumps({"package": kmsadmin.__file__, "dirs": [str(d) for d in r.template_dirs()],
                  "template": template.filename, "header": script.header,
                  "steps": r.available_steps("ps1"), "cmd": r.available_steps("cmd")}))
"""


@pytest.mark.slow
def test_installed_wheel_renders_from_its_own_templates(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(dist.glob("kmsadmin-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
    assert "kmsadmin/_templates/ps1/host-caching.ps1.j2" in names
    assert "kmsadmin/_templates/ps1/_common.ps1.j2" in names
    assert "kmsadmin/_templates/cmd/_done.cmd.j2" in names

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    shipped = (site / "kmsadmin" / "_templates").resolve()
    assert Path(found["package"]).resolve().is_relative_to(site.resolve())
    assert [Path(d).resolve() for d in found["dirs"]] == [shipped]
    assert Path(found["template"]).resolve() == shipped / "ps1" / "host-caching.ps1.j2"
    assert found["header"] == "# kmsadmin-step: host-caching/1"
    assert found["steps"] == found["cmd"]
    source_steps = sorted(
        t.name.removesuffix(".ps1.j2") for t in (ROOT / "templates" / "ps1").glob("[!_]*.ps1.j2")
    )
    assert found["steps"] == source_steps
