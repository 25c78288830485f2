"""Bad input that used to surface as a bare exception (issue 13, item 7): each is refused before any change, with a
message that names the host or file, what is wrong and what to do, and no traceback (see test_bad_input.refuse)."""

import pytest

from test_bad_input import Case, refuse, with_inventory, with_talosconfig, write


def empty_address(children, cluster):
    children["worker"]["hosts"][cluster.workers[0].name]["talos_node_address"] = ""


def blank_address(children, cluster):
    children["controlplane"]["hosts"][cluster.controlplanes[-1].name]["talos_node_address"] = "   "


def deeply_nested_talosconfig(cluster, path):
    depth = 20000
    return write(path, "context: deep\ncontexts:\n  deep:\n    endpoints: %s%s\n" % ("[" * depth, "]" * depth))


def deeply_nested_kubeconfig(cluster, path):
    depth = 20000
    return write(path, "apiVersion: v1\nkind: Config\nclusters: %s%s\n" % ("[" * depth, "]" * depth))


def with_kubeconfig(make):
    def build(cluster, tmp_path):
        path = make(cluster, str(tmp_path / "kubeconfig"))
        return {"extra_vars": {"rotate_talos": False, "rotate_kubernetes": True, "rotate_ca_kubeconfig": path}, "files": [path]}
    return build


CASES = [
    Case("empty_talos_node_address", ("talos_node_address of {worker_name} is empty", "give the node's own IP address"),
         with_inventory(empty_address)),
    Case("blank_talos_node_address", ("talos_node_address of {controlplane_name} is empty", "give the node's own IP address"),
         with_inventory(blank_address)),
    Case("deeply_nested_talosconfig", ("talosconfig nests YAML collections deeper than Python can read",
                                       "it is not a machine config, talosconfig or secrets bundle. Check the path"),
         with_talosconfig(deeply_nested_talosconfig)),
    Case("deeply_nested_kubeconfig", ("kubeconfig nests YAML collections deeper than Python can read", "Check the path"),
         with_kubeconfig(deeply_nested_kubeconfig)),
]


@pytest.fixture(name="cluster", scope="module")
def fixture_cluster(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=2, workers=1)


@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_bad_input_is_refused_before_any_change_with_what_to_do(case, cluster, tmp_path):
    names = {"worker_name": cluster.workers[0].name, "controlplane_name": cluster.controlplanes[-1].name}
    refuse(cluster, tmp_path, tuple(text.format(**names) for text in case.expected), **case.build(cluster, tmp_path))
