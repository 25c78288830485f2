#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: talos_rotation_lock
short_description: Hold a rotation directory for one ansible-playbook run, so that two rotations never run at once
version_added: 0.1.0
description:
  - Takes an exclusive lock (C(flock)) on C(rotation.lock) in O(path) for the life of the ansible-playbook process that runs
    the task, and refuses, before anything changes, when another run holds it - naming its process, host, user and start time.
  - The lock needs no release and no cleanup. A small holder process keeps the locked file open until the ansible-playbook
    process ends, however it ends (SIGKILL included), then removes C(rotation.lock) and C(rotation.appliers) - and
    O(path), if the lock created it and it is still empty, so that a refused run leaves nothing behind - and exits; the
    kernel drops the lock. A rerun
    after a killed run takes it without a manual step; a C(rotation.lock) left by a holder that was itself killed is
    simply locked again (the file only describes the holder).
  - A run is not over when ansible-playbook is - ansible-core's workers outlive it. Every task that can apply a
    configuration (M(talosops.pki.talos_machine_patch) with O(talosops.pki.talos_machine_patch#module:rotation_lock))
    holds a shared lock on C(rotation.appliers) in O(path) while it runs and is killed as soon as ansible-playbook ends;
    the holder waits for the last of them before it lets the lock go, so a new run never starts while one of an old run
    can still change a node.
  - The same playbook run taking the lock again (a second task, a second role invocation) gets it back.
  - When the holder is gone or on another host, the lock is retried for O(wait) seconds (the holder of a run that has just
    ended may need a moment); a holder whose ansible-playbook still runs on this host is refused at once.
  - Runs through its action plugin only, on the controller; the lock is tied to the ansible-playbook process.
  - The rotation directory must be on a filesystem with working file locks (a local disk, NFSv4, CephFS), as the
    persistent volume of an AWX job is.
extends_documentation_fragment:
  - talosops.pki._attributes
attributes:
  check_mode:
    description: Tests the lock without taking it or creating anything, and fails the same way when another run holds it.
    support: full
  diff_mode:
    description: Changes nothing on the cluster, so there is no diff.
    support: N/A
options:
  path:
    description:
      - The rotation directory (created with mode 0700 when missing, except in check mode). Give every run that rotates
        the same cluster the same directory.
    type: path
    required: true
  wait:
    description:
      - Seconds to keep trying while the lock is held by a run that is not, or not visibly, alive on this host.
    type: float
    default: 10.0
seealso:
  - module: talosops.pki.talos_cluster_info
author:
  - talosops.pki contributors (@talosops)
"""

EXAMPLES = r"""
- name: Hold the rotation directory for this run
  talosops.pki.talos_rotation_lock:
    path: /var/lib/talos-rotation
  run_once: true
"""

RETURN = r"""
path:
  description: The lock file.
  returned: always
  type: str
  sample: /home/admin/.talos/rotation/prod/rotation.lock
holder:
  description:
    - The run holding the lock - C(pid) (of ansible-playbook), C(host), C(user), C(since) (UTC) and C(holder_pid) - which is
      this run; in check mode null when no run holds it.
  returned: always
  type: dict
  sample: {"pid": 4242, "host": "awx-job-1812", "user": "runner", "since": "2026-11-23T09:12:44Z", "holder_pid": 4300}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock


def main():
    module = AnsibleModule(argument_spec=rotation_lock.ARGUMENT_SPEC, supports_check_mode=True)
    # In a module process the lock would be tied to that short-lived process, not to the playbook run.
    module.fail_json(msg="talos_rotation_lock runs on the controller through its action plugin (the default for the task name "
                         "talosops.pki.talos_rotation_lock); it cannot run as a module process.")


if __name__ == "__main__":
    main()
