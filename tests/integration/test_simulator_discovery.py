"""The simulated kube-apiserver announces the API groups it serves in discovery, as kube-apiserver does: /apis (legacy
APIGroupList and aggregated apidiscovery.k8s.io/v2), /apis/{group} (APIGroup) and /apis/{group}/{version}
(APIResourceList), so that the real kubectl, which resolves resources through discovery, lists APIServices. A group is
announced only while the cluster serves it (Talos' talos.dev group once its CRD exists)."""

from test_simulator_kubernetes_api import loop, request_json, sim  # noqa: F401  pylint: disable=import-error,unused-import

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
APISERVICE = {
    "metadata": {"name": "v1beta1.metrics.k8s.io", "creationTimestamp": "2026-01-02T03:04:05Z", "resourceVersion": "7",
                 "uid": "0f0e5f6a-1111-4222-8333-944455556666"},
    "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
             "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443}},
    "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Passed",
                               "lastTransitionTime": "2026-01-02T03:04:10Z", "message": "all checks passed"}]},
}


def serve(sim, objects):
    """The cluster serves these resources ("plural.group" -> objects); any other is not served."""
    sim.view.kubernetes_objects = objects.get


def test_served_groups_are_announced_in_both_discovery_shapes(sim):
    serve(sim, {"apiservices.apiregistration.k8s.io": [APISERVICE]})
    connection = sim.https(sim.ca_a.cert_pem, sim.admin_a)
    groups = request_json(connection, "/apis")[2]
    assert groups == {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
        "name": "apiregistration.k8s.io", "versions": [{"groupVersion": "apiregistration.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apiregistration.k8s.io/v1", "version": "v1"}}]}
    status, content_type, aggregated = request_json(connection, "/apis", {"Accept": AGGREGATED})
    assert (status, content_type) == (200, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    [item] = aggregated["items"]
    assert item["metadata"]["name"] == "apiregistration.k8s.io" and item["versions"][0]["version"] == "v1"
    [resource] = item["versions"][0]["resources"]
    assert (resource["resource"], resource["scope"], resource["responseKind"]) == (
        "apiservices", "Cluster", {"group": "apiregistration.k8s.io", "version": "v1", "kind": "APIService"})
    group = request_json(connection, "/apis/apiregistration.k8s.io")[2]
    assert (group["kind"], group["name"], group["preferredVersion"]["version"]) == ("APIGroup", "apiregistration.k8s.io", "v1")
    resources = request_json(connection, "/apis/apiregistration.k8s.io/v1")[2]
    assert (resources["kind"], resources["groupVersion"]) == ("APIResourceList", "apiregistration.k8s.io/v1")
    assert [(r["name"], r["namespaced"], r["kind"], r["verbs"]) for r in resources["resources"]] == [
        ("apiservices", False, "APIService", ["list"])]
    assert request_json(connection, "/apis/apiregistration.k8s.io/v2")[0] == 404
    # Not served: no group, and its discovery paths are not found.
    assert request_json(connection, "/apis/talos.dev/v1alpha1")[0] == 404
    assert request_json(connection, "/apis/apps/v1")[0] == 404


def test_the_talos_dev_group_appears_with_its_crd(sim):
    serve(sim, {"apiservices.apiregistration.k8s.io": []})
    connection = sim.https(sim.ca_a.cert_pem, sim.admin_a)
    assert [group["name"] for group in request_json(connection, "/apis")[2]["groups"]] == ["apiregistration.k8s.io"]
    serve(sim, {"apiservices.apiregistration.k8s.io": [], "serviceaccounts.talos.dev": []})
    assert [group["name"] for group in request_json(connection, "/apis")[2]["groups"]] == ["apiregistration.k8s.io", "talos.dev"]
    resources = request_json(connection, "/apis/talos.dev/v1alpha1")[2]
    assert [(r["name"], r["namespaced"], r["kind"]) for r in resources["resources"]] == [("serviceaccounts", True, "ServiceAccount")]


def test_discovery_of_a_group_is_readable_by_any_authenticated_user_and_not_by_anonymous(sim):
    serve(sim, {"apiservices.apiregistration.k8s.io": [APISERVICE]})
    assert request_json(sim.https(sim.ca_a.cert_pem, None), "/apis/apiregistration.k8s.io/v1")[0] == 401


def test_kubectl_gets_apiservices_through_discovery(sim):
    serve(sim, {"apiservices.apiregistration.k8s.io": [APISERVICE]})
    kubeconfig = sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a")
    listing = sim.kubectl(kubeconfig, "get", "apiservices", "-o", "name")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io"]
    table = sim.kubectl(kubeconfig, "get", "apiservices")
    assert table.returncode == 0, table.stderr
    assert "v1beta1.metrics.k8s.io" in table.stdout, table.stdout
    resources = sim.kubectl(kubeconfig, "api-resources", "--api-group", "apiregistration.k8s.io", "--no-headers")
    assert resources.returncode == 0, resources.stderr
    assert resources.stdout.split()[:4] == ["apiservices", "apiregistration.k8s.io/v1", "false", "APIService"]
