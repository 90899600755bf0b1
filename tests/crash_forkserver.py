"""For tests/test_fault_crash.py: `storefront run` started again and again without paying for the
imports each time (most of a start: aiogram's types alone take seconds on a busy machine).

`python -m tests.crash_forkserver LOG` imports the modules `storefront run` uses, then, for each
line "start" on its standard input, forks a child that becomes `storefront run` — `bot.cli.main(["run"])`,
in a session (process group) of its own, its output appended to LOG — and prints the child's pid. This
process runs nothing else: each child starts from modules imported but never used, as a new process
would, and does everything else a start does (settings, logging, migrations, Bot API, serving) itself.
Children are reaped by the kernel (SIGCHLD ignored here), so a killed one is gone at once.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback

import bot.cli

# What `storefront run` imports besides bot.cli, at the top of its modules and lazily (bot/serve.py,
# bot/runtime.py, bot/app.py).
PRELOAD = (
    "bot.serve",
    "bot.jobs",
    "handlers",
    "webhooks.server",
    "services.outbox_sender",
    "services.payments.mpesa",
    "services.payments.stripe",
    "aiogram.fsm.storage.redis",
)
for _name in PRELOAD:
    importlib.import_module(_name)


def child(log_path: str) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = bot.cli.main(["run"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - printed to the log, as an uncaught exception in a new process is
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    log_path = sys.argv[1]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while line := sys.stdin.readline():
        if line.strip() != "start":
            continue
        pid = os.fork()
        if pid == 0:
            child(log_path)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
