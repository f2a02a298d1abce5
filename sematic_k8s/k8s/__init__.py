"""Kubernetes, one file per role: the API client, retried calls and the calls a driver makes about its workers
(:mod:`.client`), Job manifests (:mod:`.manifests`), what a pod's status means (:mod:`.pods`), what Events and
refusals mean (:mod:`.events`), list + watch streams (:mod:`.watch`), and the executor's settings
(:mod:`.executor_settings`).

:mod:`sematic_k8s.executors.kubernetes` puts them together to run workers (``KubernetesExecutor``), and
:mod:`sematic_k8s.launchers.kubernetes` to start a driver's Job (``launch_driver``).
"""
