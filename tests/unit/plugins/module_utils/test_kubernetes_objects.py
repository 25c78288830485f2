"""Objects the Kubernetes API answers are read as plain JSON: every shape a server may send is read, none refused.

The official client's models refused objects that left out a field they require (a Node whose status.nodeInfo lacks a
NodeSystemInfo field); the collection reads only the fields it needs, and a field left out or null is "not there".
"""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes
from ansible_collections.talosops.pki.plugins.module_utils._kubernetes import NodeStatus

READY = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}


@pytest.mark.parametrize("node,expected", [
    ({"metadata": {"name": "w1"},
      "status": {"conditions": [READY], "addresses": [{"type": "InternalIP", "address": "10.5.0.3"}],
                 "nodeInfo": {"kubeletVersion": "v1.33.0"}}},  # nodeInfo with one field of ten
     NodeStatus("w1", ("10.5.0.3",), "True", "KubeletReady", "kubelet is posting ready status")),
    ({"metadata": {"name": "w2"}},  # no status yet (a node object just created)
     NodeStatus("w2", (), "Unknown", "NoReadyCondition", "the node reports no Ready condition yet")),
    ({"metadata": {"name": "w3"}, "status": {"conditions": None, "addresses": None}},
     NodeStatus("w3", (), "Unknown", "NoReadyCondition", "the node reports no Ready condition yet")),
    ({"metadata": {"name": "w4"},
      "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "False"}],
                 "addresses": [{"type": "Hostname"}, {"type": "InternalIP", "address": "fd00::4"}]}},
     NodeStatus("w4", ("fd00::4",), "False", None, None)),
    ({"metadata": {"name": "w5"}, "status": "garbage"},
     NodeStatus("w5", (), "Unknown", "NoReadyCondition", "the node reports no Ready condition yet")),
])
def test_node_status_reads_every_shape(node, expected):
    assert _kubernetes._node_status(node) == expected  # pylint: disable=protected-access


@pytest.mark.parametrize("listing,count", [
    ({"items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}, 2),
    ({"items": None}, 0),
    ({}, 0),
    ({"items": [{"metadata": {"name": "a"}}, "not an object", None]}, 1),
])
def test_list_items_are_the_objects_of_the_answer(listing, count):
    assert len(_kubernetes._items(listing)) == count  # pylint: disable=protected-access


def test_names_are_one_path_segment():
    """A name with a slash cannot reach another path (names never have one; a typo must not address another object)."""
    assert _kubernetes._segment("a/b") == "a%2Fb"  # pylint: disable=protected-access


@pytest.mark.parametrize("value,text", [("dG9rZW4=", "token"), (None, ""), ("not base64!", ""), (12, "")])
def test_a_secret_s_token_field_is_read_or_left_empty(value, text):
    """A Secret whose token field is missing or not base64 is listed with no token, not a failure of the whole report."""
    assert _kubernetes._base64_text(value) == text  # pylint: disable=protected-access


def test_a_token_request_answer_without_a_token_is_an_error_outcome(monkeypatch):
    """An answer without status.token is an HTTP error outcome naming why, not a None token for the caller to trip on."""
    api = _kubernetes.KubeAPI.__new__(_kubernetes.KubeAPI)
    api.server = "https://10.5.0.2:6443"
    monkeypatch.setattr(api, "_request", lambda *args, **kwargs: {"status": {"expirationTimestamp": "2026-12-06T09:00:00Z"}},
                        raising=False)
    outcome = api.token_request("kube-system", "ci", 600)
    assert outcome.kind == _kubernetes.HTTP_ERROR and "holds no token" in outcome.detail
