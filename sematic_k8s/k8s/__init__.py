"""Kubernetes parts of the Kubernetes executor: Job manifests, pod states, the watch, API call helpers.

:mod:`sematic_k8s.executors.kubernetes` puts them together (``KubernetesExecutor``, ``launch_driver``).
"""
