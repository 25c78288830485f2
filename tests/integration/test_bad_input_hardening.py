"""Bad input found by the red-team pass (issue 13), each refused before any change with what to do: run through
test_bad_input.refuse(), which also checks that no node changed, nothing was written, no task reported a change, and
that neither a traceback nor a private key reached the output."""

import os
import stat

import pytest
import yaml

from _playbook import run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig

from test_bad_input import KUBERNETES, b64, read, refuse, snapshot, write  # pylint: disable=import-error

LIFETIME_BOUNDS = "validity_hours must be a positive number of hours between 8760 and 876000"


@pytest.fixture(name="cluster", scope="module")
def fixture_cluster(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=2, workers=1, kubelet_restart_delay=0.05)


# --- item 4: the new CA's lifetime ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variables, expected", [
    ({"rotate_ca_talos_validity_hours": 1}, "rotate_ca_talos_validity_hours is 1: "),
    ({"rotate_ca_talos_validity_hours": 999999999}, "rotate_ca_talos_validity_hours is 999999999: "),
    (dict(KUBERNETES, rotate_ca_kubernetes_validity_hours=100), "rotate_ca_kubernetes_validity_hours is 100: "),
    (dict(KUBERNETES, rotate_ca_kubernetes_validity_hours=876001), "rotate_ca_kubernetes_validity_hours is 876001: "),
], ids=["talos-one-hour", "talos-overflow", "kubernetes-100-hours", "kubernetes-past-100-years"])
def test_a_ca_lifetime_out_of_bounds_is_refused(cluster, tmp_path, variables, expected):
    run = refuse(cluster, tmp_path, (expected + LIFETIME_BOUNDS, "expires before the admin client certificates it signs"),
                 extra_vars=variables)
    assert "date value out of range" not in run.output


# --- item 3: a folder that is not a rotation folder ---------------------------------------------------------------------

def test_a_folder_holding_other_files_is_refused_as_rotate_ca_dir_and_keeps_its_mode(cluster, tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    (shared / ".X11-unix").mkdir()
    write(shared / "someone-elses.txt", "not ours\n")
    os.chmod(shared, 0o1777)
    refuse(cluster, tmp_path, ("holds files that are not a rotation's (.X11-unix, someone-elses.txt): it is not a rotation "
                               "folder of this collection", "Set rotate_ca_dir to a new or empty folder"),
           extra_vars={"rotate_ca_dir": str(shared)})
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777, "the sticky, world-writable folder lost its mode"


def test_an_empty_folder_other_users_can_write_is_refused_and_keeps_its_mode(cluster, tmp_path):
    shared = tmp_path / "sticky"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    refuse(cluster, tmp_path, ("(mode 1777, owner uid", "can be written by other users", "make this one yours and private"),
           extra_vars={"rotate_ca_dir": str(shared)})
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777


def test_a_check_run_refuses_a_foreign_folder_too(cluster, tmp_path):
    shared = tmp_path / "home"
    shared.mkdir(mode=0o755)
    write(shared / ".bashrc", "# someone's home\n")
    before = snapshot(shared)
    run = run_playbook(cluster, str(tmp_path / "rotation"), "--check", extra_vars={"rotate_ca_dir": str(shared)}, timeout=300)
    assert run.returncode != 0 and "it is not a rotation folder of this collection" in run.output, run.output[-3000:]
    assert snapshot(shared) == before and stat.S_IMODE(os.stat(shared).st_mode) == 0o755


# --- item 5: a kubeconfig holding another cluster's entries under this cluster's names -------------------------------

def foreign_kubeconfig(cluster, path):
    """The cluster's kubeconfig with the same entry names, but another server and CA: another cluster called the same."""
    document = yaml.safe_load(read(cluster.kubeconfig_path))
    stranger = _pki.generate_ca("kubernetes")
    for entry in document["clusters"]:
        entry["cluster"].update({"server": "https://192.0.2.10:6443", "certificate-authority-data": b64(stranger.crt)})
    return write(path, yaml.safe_dump(document))


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_a_kubeconfig_entry_clash_is_refused_in_the_preflight(cluster, tmp_path, check):
    kubeconfig = foreign_kubeconfig(cluster, str(tmp_path / "kubeconfig"))
    names = Kubeconfig.load(kubeconfig).names("contexts")
    run = refuse(cluster, tmp_path, ("already has cluster %s" % Kubeconfig.load(kubeconfig).names("clusters")[0],
                                     "belonging to another cluster (another server and CA)",
                                     "rotate_ca_kubeconfig_context_name"),
                 extra_vars=dict(KUBERNETES, rotate_ca_kubeconfig=kubeconfig), args=("--check",) if check else (),
                 files=[kubeconfig])
    assert names and "Preflight | check that the kubeconfig to update" in run.output
    # Refused by the preflight: no node was patched, and no phase began.
    assert "Accept | " not in run.output.split("Preflight | check that the kubeconfig to update")[0]


# --- item 8: endpoints ---------------------------------------------------------------------------------------------------

def test_an_endpoint_given_as_a_url_is_refused_at_once(cluster, tmp_path):
    url = "https://%s:50000" % cluster.controlplanes[0].address
    run = refuse(cluster, tmp_path, ("Talos endpoint '%s' is a URL or a path, not an address" % url,
                                     "give each endpoint as an address or host name, optionally with a numeric port"),
                 extra_vars={"rotate_ca_endpoints": [url]})
    assert "Unknown error" not in run.output and "got no answer" not in run.output


def test_a_worker_as_endpoint_is_refused_saying_workers_do_not_forward(cluster, tmp_path):
    worker = cluster.workers[0].address
    run = refuse(cluster, tmp_path, ("endpoint %s:50000 does not forward requests to other nodes, which is what a worker's "
                                     "apid does" % worker, "Use the control planes' addresses as endpoints"),
                 extra_vars={"rotate_ca_endpoints": [worker]})
    assert "use an os:admin talosconfig" not in run.output
