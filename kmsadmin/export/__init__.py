"""Exports of a kmsadmin rollout to other tools (``kmsadmin export``).

:mod:`kmsadmin.export.plan` turns a playbook and an inventory into each host's rendered scripts, in
the order ``kmsadmin rollout`` would run them, without contacting a host (or with facts gathered at
export time). :mod:`kmsadmin.export.ansible` writes them as an Ansible project that ansible-core
alone can run. Neither ever holds a host key: the key enters a script only when Ansible runs it.

This layer sits beside ``kmsadmin.report``, above ``kmsadmin.fleet`` (it reads playbooks and
inventories with the fleet's loaders).
"""

from __future__ import annotations
