"""Limits on how long a test waits for a child process: hang guards, never performance assertions.

A test that starts a subprocess (the CLI, a notebook kernel, a writer to be killed) waits for it
with a timeout so that a hung child fails the test instead of the whole CI run. The limit only has
to separate "hung" from "slow on a loaded machine": on a 2-core machine at load 20 a command that
takes 10 s alone can take minutes. One generous value, in one place, for every such wait.
"""

HANG_GUARD_S = 1800
"""Seconds a test waits for a child process (or for a child's first output) before calling it hung."""
