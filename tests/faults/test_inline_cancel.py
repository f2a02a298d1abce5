"""A cancel interrupts a func body running on the resolving thread (the LocalResolver's default, max_parallelism=1)
or on the executor's threads (max_parallelism > 1, a func with a timeout): each side a real process, the cancel asked
with the CLI (directly, or through a `server --local` process), or Ctrl-C (SIGINT) sent to the resolving process. Was:
the cancel was noticed only when the body returned (here after 600 s); bodies on threads ran on, and kept the process
from exiting, until they returned."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sematic_k8s as sk
from sematic_k8s import settings
from sematic_k8s.errors import RunInterrupted
from sematic_k8s.executors.base import Task
from sematic_k8s.executors.inline import InlineExecutor
from sematic_k8s.executors.interrupts import BodyGuard
from sematic_k8s.serialization import Value
from sematic_k8s.store import sql_store
from serving import server_process
from waiting import wait_for

CLI = str(Path(sys.executable).with_name("sematic-k8s"))
REPO = Path(__file__).resolve().parents[2]
EXIT_WAIT = 120  # seconds a canceled resolver gets to exit; its func would sleep 600

PIPELINE = textwrap.dedent('''
    import signal
    import sys
    import threading
    import time
    from pathlib import Path

    import sematic_k8s as sk


    @sk.func
    def sleeper(marks: str, how: str) -> int:
        Path(marks, "before").write_text("started")
        print("going to sleep", flush=True)
        if how == "sleep":
            time.sleep(600)  # one blocking call
        else:
            for _ in range(6000):  # Python between short sleeps (a non-main thread: interrupted between them)
                time.sleep(0.1)
        Path(marks, "after").write_text("finished")
        return 1


    @sk.func
    def pipeline(marks: str, how: str) -> int:
        return sleeper(marks, how)


    def resolve(marks: str, how: str) -> None:
        pipeline(marks, how).resolve(sk.LocalResolver())


    if __name__ == "__main__":
        # Ctrl-C as in a terminal: a process started in the background (CI's `nohup ... &`) inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        marks, how, where = sys.argv[1:4]
        if where == "main":
            resolve(marks, how)
        else:  # the loop on a thread of its own, not the main thread
            failed = []

            def run() -> None:
                try:
                    resolve(marks, how)
                except BaseException as e:
                    failed.append(e)
                    raise

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
            sys.exit(1 if failed else 0)
''')


def environ(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    path = os.pathsep.join([str(REPO), str(REPO / "server")])  # this checkout's library and server
    return {**env, settings.HOME_ENV: str(home), "PYTHONPATH": path, **extra}


def _start(tmp_path: Path, name: str, source: str, args: list[str], began: Callable[[Path], bool],
           recorded: Callable[[Any], Any], what: str) -> tuple[Path, Path, subprocess.Popen[str], Any]:
    """``source`` as script ``name`` in its own process (its arguments: the marks directory, then ``args``), once
    ``began(marks)`` and ``recorded(store)`` holds (``what``: what is waited for): (home, marks, process, what
    ``recorded`` returned). The process is killed if it never gets there."""
    script, marks, home = tmp_path / name, tmp_path / "marks", tmp_path / "home"
    script.write_text(source)
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(marks), *args], env=environ(home), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: began(marks) or proc.poll() is not None, 60, what=f"{what} to start")
        assert proc.poll() is None, proc.communicate()
        store = sql_store(settings.db_url(home))
        found = wait_for(lambda: recorded(store), 60, what=f"{what} recorded")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return home, marks, proc, found


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """The block, then ``proc`` killed (and reaped) if it still runs: a failed test leaves no process behind."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start_sleeping(tmp_path: Path, how: str, where: str) -> tuple[Path, Path, subprocess.Popen[str], str, str]:
    """The pipeline in its own process, once its sleeper runs: (home, marks, process, root id, sleeper's run id)."""
    home, marks, proc, [run] = _start(tmp_path, "sleeping.py", PIPELINE, [how, where],
                                      lambda marks: (marks / "before").exists(),
                                      lambda store: store.list_runs(func="sleeper", state="running"), "the sleeper")
    return home, marks, proc, run.root_id, run.id


def cancel(proc: subprocess.Popen[str], root_id: str, env: dict[str, str]) -> str:
    """`sematic-k8s cancel` of ``root_id`` (a process of its own, in ``env``); the resolving process's stderr once
    it exited (:func:`ended`)."""
    done = subprocess.run([CLI, "cancel", root_id[:12]], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return ended(proc)


def ended(proc: subprocess.Popen[str]) -> str:
    """The resolving process's stderr once it exited (killed, and the test failed, if it is still running after
    EXIT_WAIT seconds: its body was not interrupted)."""
    try:
        _, err = proc.communicate(timeout=EXIT_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the resolving process still ran {EXIT_WAIT} s after the cancel (the timeout): its func was not "
                    f"interrupted; its stderr: {err}")
    return err


@pytest.mark.parametrize(("how", "where", "through"), [("sleep", "main", "cli"), ("sleep", "main", "server"),
                                                       ("steps", "thread", "cli")],
                         ids=["main_thread", "through_a_local_server", "loop_on_another_thread"])
def test_a_cancel_interrupts_a_func_running_on_the_resolving_thread(tmp_path: Path, how: str, where: str,
                                                                    through: str) -> None:
    """`sematic-k8s cancel` (another process) while the func sleeps on the loop's thread: the resolver process exits,
    saying it was canceled and which func was interrupted; the resolution and both runs are recorded canceled, the
    func never went on (no "after" mark), and what it printed before is its log. The loop on the main thread (one
    time.sleep(600), ended by the interrupt) or on another (interrupted between its sleeps), the cancel asked
    directly or through a `sematic-k8s server --local` process; through it, `sematic-k8s resolutions show` says the
    end as a notice of when and how, not as an error."""
    home, marks, proc, root_id, run_id = start_sleeping(tmp_path, how, where)
    with _reaped(proc):
        if through == "server":
            with server_process(home, "--local", env=environ(home)) as (_, url):
                env = environ(home, **{settings.SERVER_ENV: url})
                err = cancel(proc, root_id, env)
                shown = subprocess.run([CLI, "resolutions", "show", root_id[:12]], env=env, capture_output=True,
                                       text=True, timeout=60)
            # its end a notice of when and how, as the dashboard says it (was: "ResolutionCanceled: resolution ...
            # was canceled: ..." as its error)
            assert shown.returncode == 0 and "ResolutionCanceled" not in shown.stdout + shown.stderr, shown
            notice = shown.stdout.strip().splitlines()[-1]
            assert re.fullmatch(rf"Canceled at \S+ \S+ \S+, as asked: sleeper \(run {run_id}\) was interrupted\.",
                                notice), shown.stdout
            assert not re.search(r"^error\s", shown.stdout, re.M), shown.stdout
        else:
            err = cancel(proc, root_id, environ(home))
    assert proc.returncode == 1, err
    said = f"ResolutionCanceled: resolution {root_id} was canceled: sleeper (run {run_id}) was interrupted"
    assert said in err, err
    assert not (marks / "after").exists()
    store = sql_store(settings.db_url(home))
    res = store.get_resolution(root_id)
    assert (res.state, res.error) == ("canceled", said), res
    assert {(r.func_name, r.state) for r in store.runs_of_root(root_id)} == {("pipeline", "canceled"),
                                                                            ("sleeper", "canceled")}
    logs = subprocess.run([CLI, "logs", run_id], env=environ(home), capture_output=True, text=True, timeout=60)
    assert logs.stdout == "going to sleep\n", logs
    shown = subprocess.run([CLI, "resolutions", "show", root_id, "-o", "json"], env=environ(home),
                           capture_output=True, text=True, timeout=60)
    assert '"state": "canceled"' in shown.stdout and "was interrupted" in shown.stdout, shown


def test_ctrl_c_while_a_func_sleeps_on_the_resolving_thread_is_still_a_keyboard_interrupt(tmp_path: Path) -> None:
    """The loop's own SIGINT handler (installed while it resolves) hands a person's Ctrl-C on to Python's: the
    process ends with KeyboardInterrupt, not as canceled by request, and the resolution is recorded canceled."""
    home, marks, proc, root_id, _ = start_sleeping(tmp_path, "sleep", "main")
    proc.send_signal(signal.SIGINT)
    err = ended(proc)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err and "was interrupted" not in err, err
    assert not (marks / "after").exists()
    store = sql_store(settings.db_url(home))
    res = store.get_resolution(root_id)
    assert res.state == "canceled" and res.error.startswith("KeyboardInterrupt"), res
    assert {r.state for r in store.runs_of_root(root_id)} == {"canceled"}


@pytest.mark.parametrize("where", ["main", "thread"])
def test_an_interrupt_racing_the_end_of_bodies_never_lands_after_them(where: str) -> None:
    """Interrupts sent while bodies begin, run and end (a thread asks for one every fraction of a millisecond; bodies
    sleep from nothing to half a millisecond): each surfaces inside BodyGuard.call, or is withdrawn (the async
    exception cleared, the signal taken by the guard's handler without effect), never in the code after the body, the
    loop's bookkeeping. On the main thread by SIGINT, on another by an async exception."""
    strays: list[BaseException] = []
    counts = {"interrupted": 0, "returned": 0}

    def nap(secs: float) -> None:
        if secs:
            time.sleep(secs)

    def bodies() -> None:
        guard = BodyGuard()
        guard.open()
        stop = threading.Event()

        def interrupter() -> None:
            while not stop.is_set():
                time.sleep(0.0003)
                guard.interrupt()

        thread = threading.Thread(target=interrupter)
        thread.start()
        try:
            for i in range(1500):
                try:
                    guard.call(nap, secs=i % 3 * 0.00025)
                    counts["returned"] += 1
                except RunInterrupted:
                    counts["interrupted"] += 1
                try:  # the loop's own work after a body: nothing may land here
                    for _ in range(100):
                        pass
                    time.sleep(0.0001)
                except BaseException as e:  # noqa: BLE001
                    strays.append(e)
        finally:
            stop.set()
            thread.join()
            guard.close()

    if where == "main":
        previous = signal.getsignal(signal.SIGINT)
        bodies()
        assert signal.getsignal(signal.SIGINT) == previous  # the handler as it was
    else:
        runner = threading.Thread(target=bodies)
        runner.start()
        runner.join()
    assert strays == [], strays
    assert counts["interrupted"] and counts["returned"], counts  # both ends of the race were met


def test_a_signal_sent_as_a_body_ends_is_taken_without_effect_and_ctrl_c_stays_a_keyboard_interrupt() -> None:
    """The interrupt of a body on the main thread (a SIGINT) arrives only after the body returned (SIGINT blocked
    in the body until then): the guard's handler takes it without effect, the body's value stands; a person's Ctrl-C
    after it is still a KeyboardInterrupt."""
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal (see PIPELINE)
    guard = BodyGuard()
    guard.open()
    try:
        def body() -> int:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            sender = threading.Thread(target=lambda: sent.append(guard.interrupt()))
            sender.start()
            sender.join()
            return 7

        sent: list[bool] = []
        try:
            assert guard.call(body) == 7
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # it is delivered now, after the body
        assert sent == [True]
        for _ in range(1000):  # the loop's work after the body: the handler runs here, and must raise nothing
            time.sleep(0)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C
            for _ in range(1000):
                time.sleep(0)
    finally:
        guard.close()
        signal.signal(signal.SIGINT, outer)


POOL_PIPELINE = textwrap.dedent('''
    import signal
    import sys
    import time
    from pathlib import Path

    import sematic_k8s as sk


    def busy(marks: str, i: int, how: str) -> int:
        Path(marks, f"before-{i}").write_text("started")
        if how == "sleep":
            time.sleep(600)  # one blocking call: an interrupt lands only once it returns
        else:
            end = time.monotonic() + 600
            while time.monotonic() < end:  # Python between short sleeps: interrupted between them
                time.sleep(0.05)
        Path(marks, f"after-{i}").write_text("finished")
        return i


    @sk.func
    def looper(marks: str, i: int, how: str) -> int:
        return busy(marks, i, how)


    @sk.func(timeout=1)
    def timed(marks: str, i: int, how: str) -> int:
        return busy(marks, i, how)


    @sk.func
    def total(a: int, b: int, c: int) -> int:
        return a + b + c


    @sk.func
    def three(marks: str, how: str) -> int:
        return total(looper(marks, 0, how), looper(marks, 1, how), looper(marks, 2, how))


    @sk.func
    def one_timed(marks: str, how: str) -> int:
        return timed(marks, 0, how)


    if __name__ == "__main__":
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal (see PIPELINE)
        marks, how, which = sys.argv[1:4]
        pipeline = three if which == "three" else one_timed
        pipeline(marks, how).resolve(sk.LocalResolver(max_parallelism=3 if which == "three" else 1))
''')


def start_pool(tmp_path: Path, how: str, which: str, count: int) -> tuple[Path, Path, subprocess.Popen[str], str]:
    """The pool pipeline in its own process, once ``count`` bodies began: (home, marks, process, root id)."""
    home, marks, proc, runs = _start(tmp_path, "pool.py", POOL_PIPELINE, [how, which],
                                     lambda marks: len(list(marks.glob("before-*"))) == count,
                                     lambda store: store.list_runs(state="running"), "the bodies")
    return home, marks, proc, runs[0].root_id


@pytest.mark.parametrize("how", ["steps", "sleep"], ids=["looping_in_python", "in_one_blocking_sleep"])
def test_a_cancel_stops_funcs_running_on_the_executors_threads(tmp_path: Path, how: str) -> None:
    """`sematic-k8s cancel` (another process) while three funcs run on a LocalResolver's threads (max_parallelism=3):
    the resolver process exits 1 saying the resolution was canceled, the resolution and every run recorded canceled,
    no body went on (no "after" mark). Bodies looping in Python are interrupted; bodies in one time.sleep(600) cannot
    be, so their threads are abandoned: neither keeps the process from exiting (was: it ran until they returned)."""
    home, marks, proc, root_id = start_pool(tmp_path, how, "three", 3)
    with _reaped(proc):
        err = cancel(proc, root_id, environ(home))
    assert proc.returncode == 1 and f"ResolutionCanceled: resolution {root_id} was canceled" in err, err
    assert list(marks.glob("after-*")) == []
    store = sql_store(settings.db_url(home))
    res = store.get_resolution(root_id)
    assert res.state == "canceled", res
    assert sorted((r.func_name, r.state) for r in store.runs_of_root(root_id)) == [
        ("looper", "canceled")] * 3 + [("three", "canceled"), ("total", "canceled")]


def test_ctrl_c_stops_funcs_running_on_the_executors_threads(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while three funcs loop on a LocalResolver's threads: a KeyboardInterrupt, the resolution and
    its runs recorded canceled, the bodies interrupted (no "after" mark), and the process exits (was: it ran on until
    the bodies returned)."""
    home, marks, proc, root_id = start_pool(tmp_path, "steps", "three", 3)
    proc.send_signal(signal.SIGINT)
    err = ended(proc)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    assert list(marks.glob("after-*")) == []
    store = sql_store(settings.db_url(home))
    res = store.get_resolution(root_id)
    assert res.state == "canceled" and res.error.startswith("KeyboardInterrupt"), res
    assert {r.state for r in store.runs_of_root(root_id)} == {"canceled"}


def test_a_func_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    """A func with timeout=1 looping for 600 s: its run fails timed out, the resolution fails, and the body is
    interrupted (no "after" mark), so the process exits once the resolution ended (was: the body ran on for 600 s
    in the background and the process waited for it)."""
    home, marks, proc, root_id = start_pool(tmp_path, "steps", "timed", 1)
    with _reaped(proc):
        err = ended(proc)
    assert proc.returncode == 1 and "timed exceeded its timeout of 1s" in err, err
    assert list(marks.glob("after-*")) == []
    store = sql_store(settings.db_url(home))
    assert store.get_resolution(root_id).state == "failed"
    [run] = [r for r in store.runs_of_root(root_id) if r.func_name == "timed"]
    assert run.state == "failed" and run.error["type"] == "TimeoutError", run


def test_stops_racing_the_start_and_end_of_bodies_on_the_executors_threads() -> None:
    """An InlineExecutor (max_parallelism=3) runs 1,500 bodies napping from nothing to half a millisecond while
    another thread stops them (cancel) as they are handed over, begin, run and end: each stop lands inside the body
    it was meant for, or keeps it from beginning, or is withdrawn; never in the executor's thread after a body (its
    thread would die: threading.excepthook). A body interrupted reports nothing; one stopped after it ended reports
    its value, as does every run not stopped: once."""
    strays: list[BaseException | None] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: strays.append(args.exc_value)
    interrupted: list[str] = []

    @sk.func
    def nap(run: str, secs: float) -> str:
        try:
            if secs:
                time.sleep(secs)
            return run
        except RunInterrupted:
            interrupted.append(run)
            raise

    executor = InlineExecutor(3)
    canceled: set[str] = set()
    reported: list[str] = []
    try:
        for i in range(1500):
            run_id = f"run-{i}"
            value = Value("a", "json", "float", i % 3 * 0.00025)
            executor.submit(Task(run_id, "root", nap, {"run": Value("r", "json", "str", run_id),
                                                       "secs": value}))
            if i % 2:
                time.sleep(i % 5 * 0.0001)
                executor.cancel([run_id])
                canceled.add(run_id)
            if i % 3 == 0:
                reported += [o.run_id for o in executor.wait(0)]
        left = {f"run-{i}" for i in range(1500)} - canceled
        while not left <= set(reported):
            got = executor.wait(5)
            assert got, f"{len(left - set(reported))} bodies never reported (their thread died?)"
            reported += [o.run_id for o in got]
    finally:
        executor.close()
        threading.excepthook = previous_hook
    assert strays == [], strays
    assert len(reported) == len(set(reported)), "a run reported twice"
    assert set(interrupted) <= canceled and interrupted  # interrupted mid-body: only stopped ones, and some were
    assert not set(interrupted) & set(reported), "an interrupted body's outcome was reported"
    assert set(reported) & canceled, "no run was stopped after it ended: the race's other end was not met"


def test_a_body_raising_system_exit_on_the_executors_threads_fails_its_run() -> None:
    """A body on the executor's threads raising a BaseException of its own (SystemExit): its run gets that error as
    its outcome (was: its thread ended with no outcome, and the loop waited for it forever)."""
    @sk.func
    def leave() -> int:
        raise SystemExit(3)

    executor = InlineExecutor(3)
    try:
        executor.submit(Task("run-exit", "root", leave, {}))
        got = executor.wait(60)
    finally:
        executor.close()
    assert [(o.run_id, type(o.error).__name__) for o in got] == [("run-exit", "SystemExit")], got
