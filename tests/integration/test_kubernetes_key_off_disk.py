"""No client key on disk outside the rotation directory (issue 13, item 6): a Kubernetes API call that hangs, and the
process making it stopped the way Ansible stops its workers (SIGTERM, SIGKILL: no cleanup code runs), leaves nothing
in $TMPDIR - and nothing is there while the call is in flight either."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from collection_root import collections_root

from _playbook import private_key_needles

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig

# Opens the admin kubeconfig's identity against SERVER and makes one call that the server never answers.
CALLER = textwrap.dedent("""
    import sys
    from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
    from ansible_collections.talosops.pki.plugins.module_utils._kubernetes import KubeAPI
    credentials = Kubeconfig.load(sys.argv[1]).credentials()
    with KubeAPI(credentials, server=sys.argv[2], request_timeout=600) as api:
        print(api.nodes())
""")


def accept_while_running(listener, caller, seconds=120):
    """The caller's connection, or a failure that shows why the caller never made it."""
    for _attempt in range(int(seconds / listener.gettimeout())):
        try:
            return listener.accept()[0]
        except socket.timeout:
            if caller.poll() is not None:
                pytest.fail("the caller ended (%s) before connecting: %s" % (caller.returncode, caller.stderr.read().decode()[-2000:]))
    pytest.fail("the caller did not connect within %d s" % seconds)
    return None


def files_under(folder):
    return sorted(os.path.join(parent, name) for parent, _dirs, names in os.walk(folder) for name in names)


def holding_key(paths, needles):
    held = []
    for path in paths:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
        if any(needle in text for needle in needles):
            held.append(path)
    return held


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_slow_kubernetes_call_leaves_no_key_in_tmpdir(make_sim_cluster, tmp_path, stop):
    cluster = make_sim_cluster(controlplanes=1, workers=0)
    key = Kubeconfig.load(cluster.kubeconfig_path).credentials().key
    needles = private_key_needles(key)
    temp = tmp_path / "tmp"
    temp.mkdir()
    # A kube-apiserver that has become slow: it accepts the connection and never says a word.
    with socket.socket() as slow:
        slow.bind(("127.0.0.1", 0))
        slow.listen(1)
        slow.settimeout(0.5)
        env = dict(os.environ, TMPDIR=str(temp), PYTHONPATH=collections_root())
        caller = subprocess.Popen([sys.executable, "-c", CALLER, str(cluster.kubeconfig_path),  # pylint: disable=consider-using-with
                                   "https://127.0.0.1:%d" % slow.getsockname()[1]], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            connection = accept_while_running(slow, caller)  # the call is in flight: the client holds its credentials now
            with connection:
                during = files_under(temp)
                caller.send_signal(stop)
                assert caller.wait(timeout=60) == -stop
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait()
            caller.stdout.close()
            caller.stderr.close()
    assert not holding_key(during, needles), "the client key was on disk in $TMPDIR during the call"
    after = files_under(temp)
    assert not holding_key(after, needles), "the client key was left in $TMPDIR by a stopped call: %s" % after
    assert not after, "files left in $TMPDIR by a stopped call: %s" % after


@pytest.mark.parametrize("server_name,kind", [(None, _kubernetes.OK), ("kubernetes.default.svc", _kubernetes.OK),
                                              ("not-the-apiserver.example", _kubernetes.TLS_ERROR)])
def test_the_in_memory_tls_context_still_verifies_the_server_and_its_name(make_module_sim_cluster, server_name, kind):
    # The pool built around the in-memory context must verify exactly as the client's own would: the server's certificate
    # against the kubeconfig's CA, and its name (the address, or tls-server-name when the kubeconfig gives one).
    cluster = make_module_sim_cluster(controlplanes=1, workers=0)
    credentials = Kubeconfig.load(cluster.kubeconfig_path).credentials()._replace(tls_server_name=server_name)
    with _kubernetes.KubeAPI(credentials) as api:
        outcome = api.nodes()
    assert outcome.kind == kind, outcome.detail
    if kind == _kubernetes.OK:
        assert [node.name for node in outcome.value] == [cluster.controlplanes[0].name]
