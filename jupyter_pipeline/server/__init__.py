"""Jupyter server extension: one authenticated REST + event API over the engine.

Enabled by ``jupyter-config/server-config/jupyter_pipeline.json`` (installed into
``etc/jupyter/jupyter_server_config.d`` by ``pip install``). The core never imports this
package; this package only calls the core.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_pipeline.server.app import PipelineApp

    return [{"module": "jupyter_pipeline.server", "app": PipelineApp}]
