"""Property tests: whatever an inventory file holds, reading it ends in an inventory or an InventoryError.

Never another exception (TypeError, RecursionError, MemoryError...), never a hang: YAML documents built
from arbitrary values, INI text from arbitrary lines, and arbitrary bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsadmin.fleet.inventory import InventoryError, load_inventory

names = st.sampled_from(
    ["all", "hosts", "vars", "children", "g1", "kms01", "ansible_host", "ansible_port", "x"]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["{{ x }}", "{{ undefined }}", "h[1:3]", "h[00000000:99999999]", "127.0.0.1", "\x00"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(names, st.text(max_size=8)), inner, max_size=4)
    ),
    max_leaves=30,
)
ini_lines = st.lists(
    st.one_of(
        st.sampled_from(
            ["[g]", "[g:children]", "[g:vars]", "[all:vars]", "[h:bogus]", "x=1", "h1 a=1", "h[1:2]:5985"]
        ),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    ),
    max_size=12,
)


def _load(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            inventory = load_inventory(path, env={})
        except InventoryError as exc:
            assert str(exc)
            return
        assert inventory.hosts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_yaml_document(document: Any) -> None:
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return
    _load("inv.yml", text.encode("utf-8", "surrogatepass"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ini_lines)
def test_any_ini_text(lines: list[str]) -> None:
    _load("hosts", "\n".join(lines).encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    _load("hosts", data)
