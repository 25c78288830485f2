"""The simulated kube-apiserver's request-header (front-proxy) authentication, as the real one does it with Talos'
flags: a client certificate from the front-proxy bundle (--requestheader-client-ca-file: the issuing aggregator CA,
then KubeAggregatorCAConfig.acceptedCAs) with CN front-proxy-client makes X-Remote-User the identity; anything else
is not authenticated that way. Checked over real TLS with a SelfSubjectReview (who am I)."""

import http.client
import json
import os
import ssl
import tempfile

import pytest

from talos_sim import pki
from talos_sim.testing import admin_credentials, apply_request, call, edit_config

APPLY = "/machine.MachineService/ApplyConfiguration"
REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")


def who_am_i(cluster, certificate, user="alice", groups=("team-a",)):
    """(status, username) of a SelfSubjectReview sent with `certificate` and the request headers."""
    node = cluster.controlplanes[0]
    context = ssl.create_default_context(cadata=b"".join(cluster.node(node.address).kubernetes_pool_pems).decode())
    context.check_hostname = False  # the serving certificate names the node's address; verification stays on
    with tempfile.TemporaryDirectory() as directory:
        crt, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        with open(crt, "wb") as handle:
            handle.write(certificate.cert_pem)
        with open(key, "wb") as handle:
            handle.write(certificate.key_pem)
        context.load_cert_chain(crt, key)
    connection = http.client.HTTPSConnection(node.address, 6443, context=context, timeout=10)
    headers = {"Content-Type": "application/json", "X-Remote-User": user}
    if groups:
        headers["X-Remote-Group"] = ",".join(groups)
    try:
        connection.request("POST", REVIEW, body=json.dumps({"apiVersion": "authentication.k8s.io/v1",
                                                           "kind": "SelfSubjectReview"}), headers=headers)
        response = connection.getresponse()
        body = json.loads(response.read() or b"{}")
    except (ssl.SSLError, ConnectionError):
        # A client certificate from a CA neither pool holds fails kube-apiserver's TLS handshake.
        return "handshake refused", None
    finally:
        connection.close()
    review = body.get("status") if response.status == 201 else {}
    return response.status, review.get("userInfo", {}).get("username")


def front_proxy_client(ca, common_name="front-proxy-client"):
    return pki.issue(ca, common_name=common_name, client=True)


def apply(cluster, node, edit):
    data = edit_config(node.config_bytes(), edit)
    call(admin_credentials(cluster), node.address, APPLY, apply_request(data))


def aggregator_document(documents):
    return next(document for document in documents if document.get("kind") == "KubeAggregatorCAConfig")


def test_request_header_authentication_follows_the_front_proxy_bundle(cluster):
    node = cluster.controlplanes[0]
    old = cluster.secrets.aggregator_ca
    new = pki.new_ca("ecdsa", common_name="front-proxy")
    assert who_am_i(cluster, front_proxy_client(old)) == (201, "alice")
    # Not a front-proxy: a certificate from a CA outside the bundle, or with another CN, or no X-Remote-User.
    assert who_am_i(cluster, front_proxy_client(new)) == ("handshake refused", None)
    assert who_am_i(cluster, front_proxy_client(old, common_name="someone-else"))[0] == 401
    assert who_am_i(cluster, front_proxy_client(old), user="")[0] == 401
    # An admin client certificate from the Kubernetes CA is itself, whatever the headers say.
    admin = pki.issue(node.kubernetes_issuing, common_name="admin", organizations=("system:masters",), client=True)
    assert who_am_i(cluster, admin) == (201, "admin")

    apply(cluster, node, lambda documents: aggregator_document(documents).update(acceptedCAs=[new.cert_pem.decode()]))
    assert who_am_i(cluster, front_proxy_client(old)) == (201, "alice")
    assert who_am_i(cluster, front_proxy_client(new)) == (201, "alice")
    assert node.front_proxy_client_certificate().cert.issuer == old.cert.subject
    assert pki.is_issued_by(node.front_proxy_client_certificate().cert, old.cert)

    def swap(documents):
        document = aggregator_document(documents)
        document["issuingCA"] = {"cert": new.cert_pem.decode(), "key": new.key_pem.decode()}
        document["acceptedCAs"] = [old.cert_pem.decode()]
    apply(cluster, node, swap)
    assert pki.is_issued_by(node.front_proxy_client_certificate().cert, new.cert)
    assert node.requestheader_client_ca_pems[0] == new.cert_pem
    assert who_am_i(cluster, front_proxy_client(old)) == (201, "alice")

    apply(cluster, node, lambda documents: aggregator_document(documents).pop("acceptedCAs"))
    assert who_am_i(cluster, front_proxy_client(new)) == (201, "alice")
    assert who_am_i(cluster, front_proxy_client(old))[0] == 401


def test_aggregator_document_rules(cluster):
    node, worker = cluster.controlplanes[0], cluster.workers[0]
    current = node.config_bytes()

    def without_key(documents):
        aggregator_document(documents)["issuingCA"].pop("key")
    with pytest.raises(Exception, match="aggregator CA certificate and key are required"):
        apply(cluster, node, without_key)

    def with_legacy(documents):
        v1alpha1 = next(document for document in documents if "kind" not in document)
        v1alpha1["cluster"]["aggregatorCA"] = {"crt": pki.b64(cluster.secrets.aggregator_ca.cert_pem),
                                               "key": pki.b64(cluster.secrets.aggregator_ca.key_pem)}
    with pytest.raises(Exception, match="already set in v1alpha1 config"):
        apply(cluster, node, with_legacy)

    def on_worker(documents):
        documents.append({"apiVersion": "v1alpha1", "kind": "KubeAggregatorCAConfig",
                          "acceptedCAs": [cluster.secrets.aggregator_ca.cert_pem.decode()]})
    with pytest.raises(Exception, match="only allowed on control plane machines"):
        apply(cluster, worker, on_worker)
    assert node.config_bytes() == current
