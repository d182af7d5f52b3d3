#!/usr/bin/python3
"""Drive Debusine's own Incus executor code for incusexec's whole-task bench.

Usage: debusine_task.py IMAGE

For every line read on file descriptor 3 it runs one task the way a Debusine worker's
executor does -- IncusInstance(IMAGE).do_start(), do_run(["true"]) (as
Debusine's non-root user, created by useradd on first use), do_stop() --
and prints the seconds of the whole task and of each step. Debusine talks
to Incus through the incus command, which finds the daemon by INCUS_SOCKET;
its instances use the profile "debusine", which the bench creates.
Standard input is not the command channel: `incus launch` reads its
standard input (for configuration) when it is not a terminal, and the
bench gives this process /dev/null there, as a worker's would be.
"""

import os
import sys
import time

from debusine.tasks.executors.incus import IncusInstance


def main() -> int:
    image = sys.argv[1]
    commands = os.fdopen(3, "r")
    os.set_inheritable(3, False)
    for _ in commands:
        t0 = time.monotonic()
        inst = IncusInstance(image)
        inst.do_start()
        t1 = time.monotonic()
        p = inst.do_run(["true"])
        t2 = time.monotonic()
        inst.do_stop()
        t3 = time.monotonic()
        if p.returncode != 0:
            print(f"error: true exited {p.returncode}", flush=True)
            continue
        print(f"{t3 - t0:.6f} {t1 - t0:.6f} {t2 - t1:.6f} {t3 - t2:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
