"""Kubernetes, one file per role: the API client and retried calls (:mod:`.client`), Job manifests
(:mod:`.manifests`), what a pod's status means (:mod:`.pods`), and list + watch streams (:mod:`.watch`).

:mod:`sematic_k8s.executors.kubernetes` puts them together to run workers (``KubernetesExecutor``), and
:mod:`sematic_k8s.launchers.kubernetes` to start a driver's Job (``launch_driver``).
"""
