"""jupyter_client glue for forked kernels: a kernel provisioner and a kernel manager class.

:func:`kernel_manager_class` is an ``AsyncKernelManager`` whose provisioner (a
:class:`jupyter_client.provisioning.LocalProvisioner`) forks the kernel from a
:class:`~jupyter_pipeline.runtime.forkserver.ForkServer` when that is faithful, and
spawns it as usual otherwise. jupyter_client is imported on first use only.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyter_pipeline.runtime.forkserver import ForkServer

__all__ = ["kernel_manager_class"]

log = logging.getLogger("jupyter_pipeline.runtime.forkserver")


@functools.cache  # one class for every kernel (jupyter_client is imported on first use)
def _provisioner_class() -> type:
    from jupyter_client.provisioning import LocalProvisioner

    from jupyter_pipeline.runtime.forkserver import ForkError  # no cycle: called after import

    class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
        """LocalProvisioner whose kernel process is forked from a :class:`ForkServer`.

        Falls back to LocalProvisioner's own launch (a spawned kernel) when forking would
        not be faithful; the reason is kept in ``fork_fallback`` and logged at debug level.
        """

        fork_server: ForkServer | None = None
        fork_fallback: str | None = None

        async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
            server = self.fork_server
            extra = set(kwargs) - {
                "env",
                "cwd",
                "stdout",
                "stderr",
                "independent",
                "kernel_id",
                "extra_arguments",
            }
            reason: str | None
            if server is None:
                reason = "no fork server"
            elif extra:
                reason = f"launch options the fork server does not handle: {sorted(extra)}"
            elif kwargs.get("independent"):
                reason = "independent kernel"
            else:
                reason = server.unfit(cmd, kwargs.get("env"), kwargs.get("cwd"))
            if reason is None:
                assert server is not None
                try:
                    process = server.fork(
                        cmd,
                        cwd=kwargs.get("cwd"),
                        stdout=kwargs.get("stdout"),
                        stderr=kwargs.get("stderr"),
                    )
                except ForkError as exc:
                    reason = str(exc)
                else:
                    self.process = process  # type: ignore[assignment]  # a Popen look-alike
                    self.pid = self.pgid = process.pid  # it called setsid() before we knew
                    self.cwd = kwargs.get("cwd") or os.getcwd()
                    return self.connection_info
            self.fork_fallback = reason
            log.debug("kernel spawned, not forked: %s", reason)
            return await super().launch_kernel(cmd, **kwargs)

    return ForkProvisioner


@functools.cache
def kernel_manager_class() -> type:
    """An ``AsyncKernelManager`` subclass that forks its kernel from ``km.fork_server``.

    Set ``fork_server`` on an instance (nbclient's ``kernel_manager_class`` creates it);
    with None, or a kernel spec naming its own provisioner, it behaves like its base class.
    """
    import uuid

    from jupyter_client import AsyncKernelManager

    provisioner_class = _provisioner_class()

    class ForkKernelManager(AsyncKernelManager):  # type: ignore[misc]
        fork_server: ForkServer | None = None

        async def _async_pre_start_kernel(self, **kw: Any) -> Any:
            spec = self.kernel_spec
            spec_provisioner = spec.metadata.get("kernel_provisioner") if spec else None
            if self.provisioner is None and self.fork_server is not None:
                if spec_provisioner:
                    log.debug("kernel spawned, not forked: its kernel spec names a provisioner")
                else:
                    self.kernel_id = (
                        self.kernel_id or kw.pop("kernel_id", None) or str(uuid.uuid4())
                    )
                    provisioner = provisioner_class(
                        kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
                    )
                    provisioner.fork_server = self.fork_server
                    self.provisioner = provisioner
            return await super()._async_pre_start_kernel(**kw)

    return ForkKernelManager
