"""CPU thread count of the numerical work: :func:`set_threads` and the command-line default.

Measured on the 2-core benchmark machine under load (docs/benchmarks.md, "Threads"): the small
tensor operations of training and verification ran several times slower with torch's default of
one OpenMP thread per core than with one thread, because a second thread only adds
synchronisation when the cores are shared; the fused training kernel runs one seed per thread and
scales with threads only on idle cores. The ``landscape`` commands therefore default to
:data:`DEFAULT_THREADS`; importing the library changes nothing until :func:`set_threads` is called.
"""

from __future__ import annotations

__all__ = ["DEFAULT_THREADS", "set_threads", "get_threads"]

DEFAULT_THREADS = 1
"""Threads the commands use unless ``--threads`` says otherwise (chosen from the measurement above)."""


def set_threads(n: int) -> int:
    """Use ``n`` CPU threads for torch's intra-op parallelism and the fused training kernel.

    The fused kernel (:mod:`landscape.engine.fused`) splits the seeds over this many threads;
    its numbers do not depend on ``n``. Torch's own reductions may round differently with another
    thread count, so a run resumed with another ``n`` can differ from the uninterrupted run in
    the last bits (the stacked and ``vmap`` engines).

    Args:
        n: threads, ``>= 1``.

    Returns:
        The previous thread count.

    Raises:
        TypeError: ``n`` is not an integer.
        ValueError: ``n < 1``.
    """
    import torch

    from landscape._checks import check_int

    check_int("threads", n, minimum=1)
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    return before


def get_threads() -> int:
    """The CPU thread count in use (torch's intra-op threads)."""
    import torch

    return torch.get_num_threads()
