"""Service-account tokens on the simulated kube-apiserver, as KubeServiceAccountConfig drives them (TALOS-FACTS §8).

kube-apiserver verifies bearer tokens with the signing key's public key and every accepted public key, and
TokenRequest signs with the issuer's private key (RS256 for RSA keys, ES256 for P-256). Each control plane follows
its own config: the graceful order (accept the new public key, swap the signing key with the old one accepted,
remove the old one) keeps old tokens working until the remove.
"""

import base64
import hashlib
import http.client
import json
import ssl

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import machineconfig, pki, tlsctx
from talos_sim.kubernetes import legacy_token_secret
from talos_sim.testing import admin_credentials, apply_request, call, edit_config

APPLY = "/machine.MachineService/ApplyConfiguration"
KIND = machineconfig.SERVICE_ACCOUNT_KIND
TOKEN_PATH = "/api/v1/namespaces/default/serviceaccounts/default/token"


def _kubeconfig(cluster):
    with open(cluster.refresh_kubeconfig(), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _request(address, kubeconfig, method, path, *, token=None, body=None):
    """One request to the API server on `address`: the admin certificate unless a bearer token is given."""
    cluster_entry, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    ca = base64.b64decode(cluster_entry["certificate-authority-data"])
    if token is None:
        client = pki.CertKey.from_objects(
            pki.load_certificate(base64.b64decode(user["client-certificate-data"])),
            pki.load_private_key(base64.b64decode(user["client-key-data"])))
        context = tlsctx.client_context(client, [ca])
    else:
        context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["http/1.1"])
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    connection = http.client.HTTPSConnection(address, 6443, context=context, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def issue_token(cluster, node, expiration=3600):
    status, answer = _request(node.address, _kubeconfig(cluster), "POST", TOKEN_PATH,
                              body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                    "spec": {"expirationSeconds": expiration}})
    assert status == 201, answer
    return answer["status"]["token"]


def token_status(cluster, token):
    """The answer of every control plane to GET /api with this token."""
    kubeconfig = _kubeconfig(cluster)
    return {node.name: _request(node.address, kubeconfig, "GET", "/api", token=token)[0]
            for node in cluster.controlplanes}


def _segment(token, index):
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _public_pem(private_pem):
    return pki.public_key_pem(pki.load_private_key(private_pem).public_key()).decode()


def _rsa_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _edit_sa(data, edit):
    return edit_config(data, lambda docs: [edit(doc) for doc in docs if doc.get("kind") == KIND])


def apply(cluster, node, data):
    return call(admin_credentials(cluster), node.address, APPLY, apply_request(data)).messages[0]


def apply_all(cluster, edit):
    for node in cluster.controlplanes:
        apply(cluster, node, _edit_sa(node.config_bytes(), edit))
    cluster.settle()


def test_token_request_signs_with_the_issuer_key_and_every_apiserver_verifies(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version="v1.15.0")
    token = issue_token(cluster, cluster.controlplanes[0])
    header, claims = _segment(token, 0), _segment(token, 1)
    public = pki.load_private_key(cluster.secrets.service_account_key_pem).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert header["kid"] == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert header["alg"] == "ES256"
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["iss"] == "https://%s:6443" % cluster.endpoint
    assert token_status(cluster, token) == {node.name: 200 for node in cluster.controlplanes}
    # A token is a service account, not an admin: no Nodes for it.
    status, _answer = _request(cluster.controlplanes[0].address, _kubeconfig(cluster), "GET", "/api/v1/nodes", token=token)
    assert status == 403


def test_forged_and_tampered_tokens_are_refused(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=0, talos_version="v1.15.0")
    token = issue_token(cluster, cluster.controlplanes[0])
    header, claims, signature = token.split(".")
    elevated = dict(_segment(token, 1), sub="system:serviceaccount:kube-system:default")
    tampered = "%s.%s.%s" % (header, base64.urlsafe_b64encode(json.dumps(elevated).encode()).rstrip(b"=").decode(),
                             signature)
    assert set(token_status(cluster, tampered).values()) == {401}
    assert set(token_status(cluster, "%s.%s." % (header, claims)).values()) == {401}
    assert set(token_status(cluster, "not-a-jwt").values()) == {401}


def test_token_request_checks(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=0, talos_version="v1.15.0")
    node, kubeconfig = cluster.controlplanes[0], _kubeconfig(cluster)
    status, answer = _request(node.address, kubeconfig, "POST", TOKEN_PATH, body={"spec": {"expirationSeconds": 60}})
    assert status == 422 and "10 minutes" in answer["message"]
    nobody = "/api/v1/namespaces/default/serviceaccounts/nobody/token"
    status, _answer = _request(node.address, kubeconfig, "POST", nobody, body={"spec": {}})
    assert status == 404
    token = issue_token(cluster, node)
    status, _answer = _request(node.address, kubeconfig, "POST", TOKEN_PATH, token=token, body={"spec": {}})
    assert status == 403


def test_graceful_key_rotation_keeps_old_tokens_until_remove(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version="v1.15.0")
    old_pem = cluster.secrets.service_account_key_pem.decode()
    new_pem = _rsa_pem().decode()
    before = issue_token(cluster, cluster.controlplanes[0])

    # accept: the new public key joins the verification keys; the old key still signs.
    apply_all(cluster, lambda doc: doc.update(accepted={"publicKeys": [_public_pem(new_pem.encode())]}))
    assert _segment(issue_token(cluster, cluster.controlplanes[1]), 0)["alg"] == "ES256"

    # swap: the new key signs (RS256), the old public key is accepted.
    def swap(doc):
        doc["issuer"]["privateKey"] = new_pem
        doc["accepted"] = {"publicKeys": [_public_pem(old_pem.encode())]}
    apply_all(cluster, swap)
    after = issue_token(cluster, cluster.controlplanes[1])
    assert _segment(after, 0)["alg"] == "RS256"
    assert set(token_status(cluster, before).values()) == {200}
    assert set(token_status(cluster, after).values()) == {200}

    # remove: the old public key goes, and with it every token it signed.
    apply_all(cluster, lambda doc: doc.pop("accepted"))
    assert set(token_status(cluster, before).values()) == {401}
    assert set(token_status(cluster, after).values()) == {200}


def test_a_control_plane_that_does_not_accept_the_new_key_refuses_its_tokens(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=2, workers=0, talos_version="v1.15.0")
    first, second = cluster.controlplanes
    new_pem = _rsa_pem().decode()
    apply(cluster, first, _edit_sa(first.config_bytes(), lambda doc: doc["issuer"].update(privateKey=new_pem)))
    cluster.settle()
    token = issue_token(cluster, first)
    assert token_status(cluster, token) == {first.name: 200, second.name: 401}


def test_service_account_document_rules(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    controlplane, worker = cluster.controlplanes[0], cluster.workers[0]
    document = next(doc for doc in yaml.safe_load_all(controlplane.config_bytes()) if doc and doc.get("kind") == KIND)
    on_worker = worker.config_bytes() + b"---\n" + yaml.safe_dump(document).encode()
    with pytest.raises(GRPCError) as refused:
        apply(cluster, worker, on_worker)
    assert refused.value.status == Status.INVALID_ARGUMENT
    assert "only allowed on control plane machines: [%s]" % KIND in refused.value.message

    legacy = {"key": pki.b64(cluster.secrets.service_account_key_pem)}
    both = edit_config(controlplane.config_bytes(), lambda docs: docs[0]["cluster"].update(serviceAccount=legacy))
    with pytest.raises(GRPCError) as conflict:
        apply(cluster, controlplane, both)
    assert "already set in v1alpha1 config (.cluster.serviceAccount)" in conflict.value.message

    private_as_public = _edit_sa(controlplane.config_bytes(),
                                 lambda doc: doc.update(accepted={"publicKeys": [doc["issuer"]["privateKey"]]}))
    with pytest.raises(GRPCError) as wrong:
        apply(cluster, controlplane, private_as_public)
    assert "accepted.publicKeys[0]" in wrong.value.message


def test_v1_13_legacy_key_signs_and_verifies(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.13.4")
    assert cluster.controlplanes[0].service_account.accepted_public_pems == ()
    token = issue_token(cluster, cluster.controlplanes[0])
    assert set(token_status(cluster, token).values()) == {200}


def test_legacy_token_secrets_work_while_their_key_is_accepted(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=0, talos_version="v1.15.0")
    secret = legacy_token_secret(cluster.secrets.service_account_key_pem, "kube-system", "old-style-token")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert set(token_status(cluster, token).values()) == {401}  # no such Secret yet
    cluster.secrets_objects.append(secret)
    assert set(token_status(cluster, token).values()) == {200}
    status, listing = _request(cluster.controlplanes[0].address, _kubeconfig(cluster), "GET",
                               "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fservice-account-token")
    assert status == 200 and [item["metadata"]["name"] for item in listing["items"]] == ["old-style-token"]
    apply_all(cluster, lambda doc: doc["issuer"].update(privateKey=_rsa_pem().decode()))
    assert set(token_status(cluster, token).values()) == {401}  # its key is no longer accepted
