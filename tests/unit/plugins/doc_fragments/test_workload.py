"""The workload doc fragment's two copies of the suboptions stay equal to each other and to the argument spec they document."""

import yaml

from ansible_collections.talosops.pki.plugins.doc_fragments._workload import ModuleDocFragment
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_restart


def test_both_options_document_the_same_suboptions_as_the_argument_spec():
    workloads = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["workloads"]["suboptions"]
    restart_workloads = yaml.safe_load(ModuleDocFragment.RESTART_WORKLOADS)["options"]["restart_workloads"]["suboptions"]
    assert workloads == restart_workloads
    spec = kubernetes_restart.WORKLOAD_OPTIONS
    assert set(workloads) == set(spec)
    for name, option in workloads.items():
        assert option["type"] == spec[name]["type"], name
        assert option.get("choices") == spec[name].get("choices"), name
        assert bool(option.get("required")) == bool(spec[name].get("required")), name
