"""Executors: where one Run's code executes (DESIGN.md "Executor").

The resolution loop hands an executor a :class:`~sematic_k8s.executors.base.Task` (one attempt of one Run:
the Func itself and its input Values, in memory) and collects :class:`~sematic_k8s.executors.base.Outcome`s.
An executor that runs the attempt in another process (:mod:`.remote`: :mod:`.process`, :mod:`.docker`,
:mod:`.kubernetes`) sends it as a :class:`~sematic_k8s.specs.TaskSpec` instead (the func's path and the
input artifact ids, as JSON) and reads the worker's outcome document back from storage.

- :mod:`.inline`: in this process (threads for parallelism and timeouts); the LocalResolver's executor.
- :mod:`.inline_or_remote`: a driver's executor: inline funcs in the driver, the others remote.
- :mod:`.process`, :mod:`.docker`, :mod:`.kubernetes`: one worker process, container or Job per attempt. The
  Kubernetes executor wires one module per job: :mod:`.kubernetes_launch` (with :mod:`.kubernetes_launch_queue`)
  creates Jobs, :mod:`.kubernetes_follow` follows them, :mod:`.kubernetes_attempts` holds what is known of each,
  :mod:`.kubernetes_copies` deletes the stored copies of tasks too large for a Secret, off the driver's loop. The
  Docker executor follows its containers; :mod:`.docker_create` says what a container is asked of the engine and
  what its refusal means, :mod:`.docker_image_wait` holds the runs that wait for their image.
- :mod:`.scripted`: outcomes decided in advance, to test the loop without threads or waiting.

Drivers pick executors by name through :data:`sematic_k8s.backends.EXECUTORS` (each has ``from_spec``).
"""
