"""Applies a profile's platform settings to a task: CPU/memory limits on the task itself, the
rest through kfp-kubernetes (only where the profile has Kubernetes platform config)."""

from __future__ import annotations

from kfp import kubernetes

from components import run_identity
from pipelines.profiles import Platform

RUN_AS_USER = 10001  # the USER of every image under images/


def apply(task, platform: Platform, step_class: str, *, uses_secrets: bool = False, run_id_env: bool = False):
    """Resources, accelerators, timeout, node selector, tolerations (and secrets as env where asked).

    On a cluster every step runs as the images' non-root user (10001); KFP offers no
    read-only root filesystem for step pods, so that is set only on the chart's Job.
    ``run_id_env``: the pod's ``pipeline/runid`` label as ``BERTJA_RUN_ID`` (the run id without
    a run-scoped input, which would defeat the cache; see ``components.run_identity``).
    A step class with an accelerator gets its type and count, runs on the accelerator's nodes
    (its node selector replaces the platform's) and tolerates their taints as well.
    Without Kubernetes platform config (Vertex AI) a task gets only CPU, memory and accelerator limits.
    """
    res = platform.resources.get(step_class)
    acc = platform.accelerators.get(step_class)
    if res:
        task.set_cpu_limit(res.cpu).set_memory_limit(res.memory)
    if acc:
        task.set_accelerator_type(acc.type).set_accelerator_limit(acc.count)
    if not platform.kubernetes:
        return task
    if platform.resources:  # a cluster profile
        kubernetes.set_security_context(task, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, run_as_non_root=True)
        if run_id_env:
            kubernetes.use_field_path_as_env(task, env_name=run_identity.RUN_ID_ENV,
                                             field_path=run_identity.KFP_RUN_ID_FIELD_PATH)
    if res:
        task.set_cpu_request(res.cpu).set_memory_request(res.memory)
        if res.timeout_s:
            kubernetes.set_timeout(task, res.timeout_s)
    for key, value in (acc.node_selector if acc and acc.node_selector else platform.node_selector).items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in [*platform.tolerations, *(acc.tolerations if acc else [])]:
        kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator", "Equal"),
                                  value=t.get("value"), effect=t.get("effect"))
    if uses_secrets:
        for env, (secret, key) in platform.secret_env.items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={key: env})
    return task
