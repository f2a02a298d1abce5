"""A worker container as the Docker engine is asked for it: the func's ``cpu`` and ``memory`` (Kubernetes
quantities) in the engine's units (:func:`cpus`, :func:`memory_bytes`), and the engine's refusal of it in its words
with what to do (:class:`Refused`; :class:`ImageAbsent`, an image to pull first)."""

from __future__ import annotations

from typing import Any

from sematic_k8s.docker_pull_progress import unpulled_words
from sematic_k8s.docker_pull_wait import registry_unanswered
from sematic_k8s.executors.base import Task
from sematic_k8s.specs import WORKER_COMMAND


class ImageAbsent(Exception):
    """The engine does not have the worker's image (its create said so): it is to be pulled."""


class Refused(Exception):
    """The engine's answer refusing a worker's container (``error``, a docker APIError) as it was asked to
    ``create``, ``pull`` its image, or ``start`` it."""

    def __init__(self, stage: str, error: Any) -> None:  # noqa: ANN401 - a docker APIError
        super().__init__(stage, error)
        self.stage, self.said = stage, str(error.explanation or error)

    def passing(self) -> bool:
        """Whether it is a pull that failed because the image's registry did not answer, or answered "not now"
        (a 5xx, 429): the image may come, where a registry's "manifest unknown" or "unauthorized" says it will not."""
        return self.stage == "pull" and registry_unanswered(self.said)

    def words(self, task: Task, image: str, waited: float | None = None) -> str:
        """What the engine refused, in its words, and what to do (``waited``: seconds the run waited for its
        image's registry to answer)."""
        if self.stage == "pull":
            return unpulled_words(image, self.said, waited)
        what = "refused to start it" if self.stage == "start" else "refused it"
        for stage, words, fix in _FIXES:
            if stage == self.stage and words in self.said:
                return f"the Docker engine {what} ({self.said}): " + fix.format(func=task.func, image=image)
        return f"the Docker engine {what} ({self.said})"


# what to do about a refused create or start, by the engine's words
# (a memory below the engine's 6 MB minimum is refused where the func is declared: quantities.MIN_MEMORY)
_FIXES = (("create", "Range of CPUs", "the func's cpu={func.cpu} is outside that range: ask for an amount within it"),
          *(("start", words, f"image {{image}} cannot run the worker (`{' '.join(WORKER_COMMAND)}`): it needs "
                             "python, with sematic-k8s installed, on its PATH")
            for words in ("executable file not found", "no such file or directory")))


def cpus(cpu: str) -> float:
    """Kubernetes quantity ('500m', '2') -> CPUs."""
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(memory: str) -> int:
    """Kubernetes quantity ('512Mi', '4Gi', '1G') -> bytes."""
    for unit, factor in _UNITS.items():
        if memory.endswith(unit):
            return int(float(memory[: -len(unit)]) * factor)
    return int(memory)
