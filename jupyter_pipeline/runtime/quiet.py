"""Kernel managers without the chatter a run should not print.

jupyter_client interrupts a kernel (SIGINT) right before asking it to shut down. A kernel
that has finished its cells is idle or just finishing a request, and ipykernel answers the
signal with ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` on its stderr —
the last line of a step's log, usually after a failed cell, as if the user had pressed
Ctrl-C. The shutdown request alone stops an ipykernel (it is handled on the control
channel, even while the shell is busy), and a cancelled step's kernel is killed with its
process group anyway, so the interrupt is left out.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.manager import AsyncKernelManager

__all__ = ["QUIET_IPYKERNEL_ARGS", "QuietKernelManager", "no_interrupt_at_shutdown"]

# ipykernel's start-up warnings ("Kernel is running over TCP without encryption") are for
# people who expose a kernel on a network; errors still show.
QUIET_IPYKERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def no_interrupt_at_shutdown(km: Any) -> None:
    """Make the kernel manager ``km`` skip the SIGINT it sends before a shutdown request.

    Explicit interrupts (``km.interrupt_kernel()``, e.g. nbclient's on a cell timeout) are
    unchanged: only the one sent while ``km.shutting_down`` is dropped.
    """
    interrupt = km._async_interrupt_kernel

    async def interrupt_unless_shutting_down() -> None:
        if km.shutting_down:
            return
        await interrupt()

    km._async_interrupt_kernel = interrupt_unless_shutting_down


class QuietKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` for papermill runs that prints nothing of its own.

    No interrupt before shutdown (see the module docstring) and, for ipykernel, no start-up
    warnings. For ``papermill.execute_notebook(..., kernel_manager_class=QuietKernelManager)``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        no_interrupt_at_shutdown(self)

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        if self.ipykernel:
            kw["extra_arguments"] = [*(kw.get("extra_arguments") or []), *QUIET_IPYKERNEL_ARGS]
        return await super()._async_pre_start_kernel(**kw)
