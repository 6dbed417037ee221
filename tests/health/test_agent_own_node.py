"""The health agent writes only its own Node: its pod-bound token names the pod's node
(user extra authentication.kubernetes.io/node-name, as kube 1.32+ does) and the
ValidatingAdmissionPolicy shipped in the manifests refuses a write to any other node.
Checked with the official client against the embedded API server, which enforces
RBAC and the policy as a real cluster would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from gpuyard import manifests
from gpuyard.apiserver.testing import ServerProcess

NS = manifests.NAMESPACE
AGENT = "gpuyard-health-agent"
POLICY = "gpuyard-health-agent-own-node"


@pytest.fixture
def admin(apiserver: ServerProcess) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(apiserver.kubeconfig)
    try:
        yield api
    finally:
        api.close()


def as_token(srv: ServerProcess, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = srv.url
    cfg.ssl_ca_cert = srv.ca_file
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def install_agent_identity(api: client.ApiClient) -> None:
    """The agent's ServiceAccount, role and own-node policy, from the manifests."""
    dyn = client.ApiClient.sanitize_for_serialization
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    adm = client.AdmissionregistrationV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    wanted = {
        ("ServiceAccount", AGENT),
        ("ClusterRole", AGENT),
        ("ClusterRoleBinding", AGENT),
        ("ValidatingAdmissionPolicy", POLICY),
        ("ValidatingAdmissionPolicyBinding", POLICY),
    }
    objs = [o for o in manifests.objects() if (o["kind"], o["metadata"]["name"]) in wanted]
    assert {(o["kind"], o["metadata"]["name"]) for o in objs} == wanted
    for o in objs:
        body = dyn(api, o)
        {
            "ServiceAccount": lambda b: core.create_namespaced_service_account(NS, b),
            "ClusterRole": rbac.create_cluster_role,
            "ClusterRoleBinding": rbac.create_cluster_role_binding,
            "ValidatingAdmissionPolicy": adm.create_validating_admission_policy,
            "ValidatingAdmissionPolicyBinding": adm.create_validating_admission_policy_binding,
        }[o["kind"]](body)


def condition_patch(status: str) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {"type": "GpuHealthy", "status": status, "reason": "Test", "message": "agent"}
            ]
        }
    }


def test_the_agent_writes_only_the_node_its_pod_runs_on(
    apiserver: ServerProcess, admin: client.ApiClient
) -> None:
    install_agent_identity(admin)
    core = client.CoreV1Api(admin)
    for n in ("gpu-a", "gpu-b"):
        core.create_node({"metadata": {"name": n}})
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "agent-a"},
            "spec": {
                "serviceAccountName": AGENT,
                "nodeName": "gpu-a",
                "containers": [{"name": "agent", "image": "gpuyard"}],
            },
        },
    )
    pod = core.read_namespaced_pod("agent-a", NS)
    bound = core.create_namespaced_service_account_token(
        AGENT,
        NS,
        {
            "spec": {
                "audiences": [],
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-a"},
            }
        },
    ).status.token
    agent = as_token(apiserver, bound)
    try:
        # who the token says it is: the pod and its node
        me = client.AuthenticationV1Api(agent).create_self_subject_review({})
        extra = me.status.user_info.extra
        assert extra["authentication.kubernetes.io/pod-name"] == ["agent-a"]
        assert extra["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]
        assert extra["authentication.kubernetes.io/node-name"] == ["gpu-a"]
        assert extra["authentication.kubernetes.io/node-uid"] == [
            core.read_node("gpu-a").metadata.uid
        ]
        acore = client.CoreV1Api(agent)
        acore.patch_node_status("gpu-a", condition_patch("False"))
        conds = {c.type: c.status for c in core.read_node("gpu-a").status.conditions}
        assert conds["GpuHealthy"] == "False"
        with pytest.raises(ApiException) as err:
            acore.patch_node_status("gpu-b", condition_patch("False"))
        assert err.value.status == 403
        assert "may write only the node it runs on" in err.value.body
        assert "its token is for node gpu-a, not gpu-b" in err.value.body
        b = core.read_node("gpu-b").status
        assert not [c for c in ((b.conditions if b else None) or []) if c.type == "GpuHealthy"]
    finally:
        agent.close()
    # a token of the agent's ServiceAccount bound to no pod names no node: refused too
    loose = core.create_namespaced_service_account_token(
        AGENT, NS, {"spec": {"audiences": []}}
    ).status.token
    agent = as_token(apiserver, loose)
    try:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(agent).patch_node_status("gpu-a", condition_patch("True"))
        assert err.value.status == 403 and "its token names no node" in err.value.body
    finally:
        agent.close()
    # everyone else is untouched by the policy
    core.patch_node_status("gpu-b", condition_patch("True"))
