"""A cancel interrupts a func body running on the resolving thread (the LocalResolver's default, max_parallelism=1):
each side a real process, the cancel asked with the CLI (directly, or through a `server --local` process), or Ctrl-C
(SIGINT) sent to the resolving process. Was: the cancel was noticed only when the body returned (here after 600 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sematic_k8s import settings
from sematic_k8s.errors import RunInterrupted
from sematic_k8s.executors.interrupts import BodyGuard
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


def start_sleeping(tmp_path: Path, how: str, where: str) -> tuple[Path, Path, subprocess.Popen[str], str, str]:
    """The pipeline in its own process, once its sleeper runs: (home, marks, process, root id, sleeper's run id)."""
    script, marks, home = tmp_path / "sleeping.py", tmp_path / "marks", tmp_path / "home"
    script.write_text(PIPELINE)
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(marks), how, where], env=environ(home), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (marks / "before").exists() or proc.poll() is not None, 60, what="the sleeper to start")
        assert proc.poll() is None, proc.communicate()
        store = sql_store(settings.db_url(home))
        [run] = wait_for(lambda: store.list_runs(func="sleeper", state="running"), 60, what="the sleeper recorded")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return home, marks, proc, run.root_id, run.id


def ended(proc: subprocess.Popen[str]) -> str:
    """The resolving process's stderr once it exited (killed, and the test failed, if it is still running after
    EXIT_WAIT seconds: its body was not interrupted)."""
    try:
        _, err = proc.communicate(timeout=EXIT_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the resolving process still ran {EXIT_WAIT} s after the cancel: its func was not interrupted; "
                    f"its stderr: {err}")
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
    directly or through a `sematic-k8s server --local` process."""
    home, marks, proc, root_id, run_id = start_sleeping(tmp_path, how, where)
    try:
        if through == "server":
            with server_process(home, "--local", env=environ(home)) as (_, url):
                done = subprocess.run([CLI, "cancel", root_id[:12]], env=environ(home, **{settings.SERVER_ENV: url}),
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                err = ended(proc)
        else:
            done = subprocess.run([CLI, "cancel", root_id[:12]], env=environ(home), capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, done.stderr
            err = ended(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
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
