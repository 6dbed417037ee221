"""Clients nobody here wrote, against the embedded API server: lightkube (typed models
of 1.37, server-side apply, the /scale subresource, Status errors parsed) and kr8s
(discovery, version, whoami, patches)."""

from __future__ import annotations

from typing import Any

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import ConfigMap as Kr8sConfigMap
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.autoscaling_v1 import ScaleSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap


async def test_lightkube(apiserver_inproc: Any) -> None:
    client = AsyncClient(config=KubeConfig.from_file(apiserver_inproc.kubeconfig_path))
    try:
        cm = ConfigMap(metadata=ObjectMeta(name="lk", labels={"app": "lk"}), data={"a": "1"})
        made = await client.create(cm, namespace="default", field_manager="maker")
        assert made.metadata is not None and made.metadata.uid
        with pytest.raises(ApiError) as exc:
            await client.create(cm, namespace="default")
        assert (exc.value.status.code, exc.value.status.reason) == (409, "AlreadyExists")
        names = [
            c.metadata.name
            async for c in client.list(ConfigMap, namespace="default", labels={"app": "lk"})
            if c.metadata is not None
        ]
        assert names == ["lk"]
        # Server-side apply: a field another manager set conflicts unless forced.
        changed = ConfigMap(metadata=ObjectMeta(name="lk", namespace="default"), data={"a": "2"})
        with pytest.raises(ApiError) as exc:
            await client.apply(changed, field_manager="applier")
        assert exc.value.status.code == 409 and exc.value.status.reason == "Conflict"
        assert 'conflict with "maker"' in (exc.value.status.message or "")
        got = await client.apply(changed, field_manager="applier", force=True)
        assert got.data == {"a": "2"}
        # A typed Deployment, scaled through its /scale subresource.
        labels = {"app": "web"}
        dep = Deployment(
            metadata=ObjectMeta(name="web"),
            spec=DeploymentSpec(
                selector=LabelSelector(matchLabels=labels),
                template=PodTemplateSpec(
                    metadata=ObjectMeta(labels=labels),
                    spec=PodSpec(containers=[Container(name="c", image="nginx")]),
                ),
            ),
        )
        made_dep = await client.create(dep, namespace="default")
        assert made_dep.spec is not None and made_dep.spec.replicas == 1  # defaulted
        scale = await client.get(Deployment.Scale, "web", namespace="default")
        assert scale.spec is not None and scale.spec.replicas == 1
        scale.spec = ScaleSpec(replicas=3)
        await client.replace(scale, "web", namespace="default")
        after = await client.get(Deployment, "web", namespace="default")
        assert after.spec is not None and after.spec.replicas == 3
        await client.delete(ConfigMap, "lk", namespace="default")
        with pytest.raises(ApiError) as exc:
            await client.get(ConfigMap, "lk", namespace="default")
        assert exc.value.status.code == 404
    finally:
        await client.close()


# kr8s warns that it was released before 1.37; it is the server under test that is new
@pytest.mark.filterwarnings("ignore:Kubernetes version v1.37")
async def test_kr8s(apiserver_inproc: Any) -> None:
    api = await kr8s.asyncio.api(kubeconfig=apiserver_inproc.kubeconfig_path)
    version = await api.version()
    assert version["major"] == "1" and version["minor"].startswith("37"), version
    assert await api.whoami()
    cm = await Kr8sConfigMap(
        {"metadata": {"name": "k8", "namespace": "default"}, "data": {"a": "1"}}, api=api
    )
    await cm.create()
    await cm.patch({"data": {"b": "2"}})
    await cm.refresh()
    assert cm.raw["data"] == {"a": "1", "b": "2"}
    listed = [o.name async for o in api.get("configmaps", namespace="default")]
    assert "k8" in listed, listed
    await cm.delete()
    assert not await cm.exists()
