"""A CustomResourceDefinition served in two versions with conversion strategy None, as
kube-apiserver serves it: only apiVersion changes between versions; an object is stored
in the storage version of the time of its write (pruned by that version's schema, so a
field the storage version lacks does not survive), defaulted on read by the version it
is stored in and pruned by the version read; status.storedVersions keeps every version
ever marked storage, and one of them cannot be removed from spec.versions; unknown
fields are judged by the version of the request; field ownership is compared by path
across versions. A Webhook strategy whose webhook cannot
be reached refuses the reads and writes it would convert, naming the webhook."""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import yaml

from gpuyard.apiserver.testing import ServerProcess

from .api import Api
from .test_cel_rules import KUBECTL

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
NAME = "gadgets.example.com"


def schema(**props: dict[str, Any]) -> dict[str, Any]:
    return {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": props}},
        }
    }


V1 = schema(size={"type": "integer", "default": 1}, color={"type": "string"})
V2 = schema(
    size={"type": "integer"},
    color={"type": "string"},
    shape={"type": "string", "default": "round"},
)


def gadget_crd(storage: str = "v1", **conversion: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {"name": "v1", "served": True, "storage": storage == "v1", "schema": V1},
            {"name": "v2", "served": True, "storage": storage == "v2", "schema": V2},
        ],
    }
    if conversion:
        spec["conversion"] = conversion
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAME},
        "spec": spec,
    }


def at(version: str, name: str = "") -> str:
    path = f"/apis/example.com/{version}/namespaces/default/gadgets"
    return f"{path}/{name}" if name else path


def gadget(version: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"example.com/{version}",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": spec,
    }


async def _establish(api: Api, body: dict[str, Any]) -> None:
    st, out = await api.post(CRDS, body)
    assert st == 201, out
    for _ in range(100):
        if (await api.get(at("v2")))[0] == 200:
            return
    raise AssertionError("the CRD's versions are not served")


async def test_versions_without_conversion_change_only_the_api_version(api: Api) -> None:
    await _establish(api, gadget_crd())
    # Written in v2, stored in v1: shape (v1 has no such field) does not survive
    st, out = await api.post(at("v2"), gadget("v2", "g1", size=3, color="red", shape="square"))
    assert st == 201, out
    assert out["apiVersion"] == "example.com/v2"
    assert out["spec"] == {"size": 3, "color": "red"}
    for version in ("v1", "v2"):
        st, out = await api.get(at(version, "g1"))
        assert st == 200, out
        assert out["apiVersion"] == f"example.com/{version}"
        # defaulted by v1, where it is stored: v2's default shape is not applied
        assert out["spec"] == {"size": 3, "color": "red"}, (version, out)
    st, out = await api.get(at("v1"))
    assert [i["apiVersion"] for i in out["items"]] == ["example.com/v1"]
    # Field validation is by the version of the request: shape is unknown to v1 only
    strict = {"fieldValidation": "Strict"}
    body = gadget("v1", "g3", shape="flat")
    st, err = await api.req("POST", at("v1"), body, **strict)
    assert st == 400, err
    assert err["message"] == (
        'Gadget in version "v1" cannot be handled as a Gadget: strict decoding error: '
        'unknown field "spec.shape"'
    ), err
    st, out = await api.req("POST", at("v2"), gadget("v2", "g3", shape="flat"), **strict)
    assert st == 201, out
    assert (await api.req("DELETE", at("v2", "g3")))[0] == 200

    # The storage version moves to v2: storedVersions keeps v1
    st, crd = await api.get(f"{CRDS}/{NAME}")
    assert crd["status"]["storedVersions"] == ["v1"]
    moved = gadget_crd("v2")
    moved["metadata"]["resourceVersion"] = crd["metadata"]["resourceVersion"]
    st, crd = await api.req("PUT", f"{CRDS}/{NAME}", moved)
    assert st == 200, crd
    assert crd["status"]["storedVersions"] == ["v1", "v2"]
    # Written in v1, stored in v2: v1's default size, then read by v2 with its default
    st, out = await api.post(at("v1"), gadget("v1", "g2", color="blue"))
    assert st == 201, out
    assert out["apiVersion"] == "example.com/v1"
    assert out["spec"] == {"size": 1, "color": "blue"}
    st, out = await api.get(at("v2", "g2"))
    assert out["spec"] == {"size": 1, "color": "blue", "shape": "round"}, out
    # g1 is still stored in v1 (no default shape) until it is written again
    st, out = await api.get(at("v2", "g1"))
    assert out["spec"] == {"size": 3, "color": "red"}, out
    st, out = await api.patch(at("v2", "g1"), {"spec": {"color": "green"}})
    assert st == 200, out
    assert out["spec"] == {"size": 3, "color": "green", "shape": "round"}, out

    # A version in storedVersions cannot be dropped from spec.versions
    only_v2 = copy.deepcopy(moved)
    only_v2["spec"]["versions"] = only_v2["spec"]["versions"][1:]
    only_v2["metadata"]["resourceVersion"] = crd["metadata"]["resourceVersion"]
    st, err = await api.req("PUT", f"{CRDS}/{NAME}", only_v2)
    assert st == 422, err
    assert {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "v1": must appear in spec.versions',
        "field": "status.storedVersions[0]",
    } in err["details"]["causes"], err


async def test_field_owners_across_versions_are_compared_by_path(api: Api) -> None:
    await _establish(api, gadget_crd())
    body = gadget("v1", "g", color="red")
    st, out = await api.req(
        "PATCH",
        at("v1", "g"),
        body,
        ctype="application/apply-patch+yaml",
        fieldManager="first",
    )
    assert st == 201, out
    st, err = await api.req(
        "PATCH",
        at("v2", "g"),
        gadget("v2", "g", color="blue"),
        ctype="application/apply-patch+yaml",
        fieldManager="second",
    )
    assert st == 409, err
    assert err["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "first"',
            "field": ".spec.color",
        }
    ], err
    owners = {m["manager"]: m["apiVersion"] for m in out["metadata"]["managedFields"]}
    assert owners == {"first": "example.com/v1"}


async def test_an_unreachable_conversion_webhook_refuses_what_it_would_convert(
    api: Api,
) -> None:
    hook = {
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:1/convert"},
        },
    }
    await _establish(api, gadget_crd(**hook))
    # In the stored version no conversion is needed
    st, out = await api.post(at("v1"), gadget("v1", "g", color="red"))
    assert st == 201, out
    st, err = await api.get(at("v2", "g"))
    assert st == 500, err
    assert err["reason"] == "InternalError"
    assert err["message"].startswith(
        "conversion webhook for example.com/v1, Kind=Gadget failed: "
    ), err
    st, err = await api.post(at("v2"), gadget("v2", "h", color="red"))
    assert st == 500, err
    assert "conversion webhook for example.com/v2, Kind=Gadget failed" in err["message"]
    assert (await api.get(at("v1", "h")))[0] == 404


def test_kubectl_reads_each_version(apiserver: ServerProcess) -> None:
    def k(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", apiserver.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )

    r = k("apply", "-f", "-", input=yaml.safe_dump(gadget_crd()))
    assert r.returncode == 0, r.stderr
    for _ in range(50):
        if k("get", "gadgets.v2.example.com").returncode == 0:
            break
    r = k("apply", "-f", "-", input=yaml.safe_dump(gadget("v2", "g", size=2, shape="flat")))
    assert r.returncode == 0, r.stderr
    for version in ("v1", "v2"):
        r = k("get", f"gadgets.{version}.example.com", "g", "-o", "json")
        assert r.returncode == 0, r.stderr
        got = yaml.safe_load(r.stdout)
        assert got["apiVersion"] == f"example.com/{version}"
        assert got["spec"] == {"size": 2}, got


async def test_schema_errors_name_the_schema_as_kube_does(api: Api) -> None:
    """Versions with one and the same schema are judged once, at spec.validation (kube's
    internal form moves identical per-version schemas there); different schemas each
    at spec.versions[i]."""
    bad = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": {}}}}}
    where = ".openAPIV3Schema.properties[spec].properties[n].type"
    same = gadget_crd()
    for v in same["spec"]["versions"]:
        v["schema"] = {"openAPIV3Schema": bad}
    st, err = await api.post(CRDS, same)
    assert st == 422, err
    assert [c["field"] for c in err["details"]["causes"]] == [f"spec.validation{where}"]
    different = gadget_crd()
    different["spec"]["versions"][1]["schema"] = {"openAPIV3Schema": bad}
    st, err = await api.post(CRDS, different)
    assert st == 422, err
    assert [c["field"] for c in err["details"]["causes"]] == [f"spec.versions[1].schema{where}"]


async def test_conversion_is_defaulted_and_judged(api: Api) -> None:
    """spec.conversion defaults to strategy None (a service port to 443); an unknown
    strategy, a Webhook strategy without its client or review versions, and a webhook
    given to strategy None are refused, at the fields kube-apiserver names."""
    hook = {
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": "default", "name": "conv"}},
        },
    }
    bad: list[tuple[dict[str, Any], str, str, str]] = [
        (
            {"strategy": "Bogus"},
            "FieldValueNotSupported",
            "spec.conversion.strategy",
            'Unsupported value: "Bogus": supported values: "None", "Webhook"',
        ),
        (
            {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"]}},
            "FieldValueRequired",
            "spec.conversion.webhookClientConfig",
            "Required value: required when strategy is set to Webhook",
        ),
        (
            {
                "strategy": "Webhook",
                "webhook": {"clientConfig": {"url": "https://x/c"}, "conversionReviewVersions": []},
            },
            "FieldValueRequired",
            "spec.conversion.conversionReviewVersions",
            "Required value: must contain at least one version",
        ),
        (
            {"strategy": "None", "webhook": hook["webhook"]},
            "FieldValueForbidden",
            "spec.conversion.webhookClientConfig",
            "Forbidden: should not be set when strategy is not set to Webhook",
        ),
    ]
    for conversion, reason, field, message in bad:
        st, err = await api.post(CRDS, gadget_crd(**conversion))
        assert st == 422, (conversion, err)
        assert {"reason": reason, "message": message, "field": field} in err["details"]["causes"], (
            err
        )
    st, out = await api.post(CRDS, gadget_crd())
    assert st == 201, out
    assert out["spec"]["conversion"] == {"strategy": "None"}
    assert (await api.req("DELETE", f"{CRDS}/{NAME}"))[0] == 200
    for _ in range(100):
        if (await api.get(f"{CRDS}/{NAME}"))[0] == 404:
            break
    st, out = await api.post(CRDS, gadget_crd(**hook))
    assert st == 201, out
    assert out["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["port"] == 443
