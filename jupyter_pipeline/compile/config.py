"""KFP settings: default image, packages mode, env vars, Kubernetes secrets, cluster and auth.

Settings come from, lowest precedence first:

1. the user config file (TOML or JSON): ``$JUPYTER_PIPELINE_KFP_CONFIG``, else
   ``<jupyter config dir>/jupyter_pipeline/kfp.toml`` if it exists;
2. the notebook's metadata ``metadata.jupyter_pipeline.kfp`` (what belongs to the notebook:
   image, packages, env, secrets, experiment — never credentials);
3. environment variables (``KF_PIPELINES_ENDPOINT``, ``KF_PIPELINES_TOKEN``,
   ``KF_PIPELINES_COOKIES``, ``KF_PIPELINES_NAMESPACE``, ``JUPYTER_PIPELINE_IMAGE``);
4. command-line options.

The step image is the one exception: a notebook's own default image (its metadata here,
or Kale's ``docker_image``) ranks above the configured defaults (the file's ``image`` and
``JUPYTER_PIPELINE_IMAGE``), since the notebook knows which packages it needs, and below
``--image``. In full, most specific first: a cell's ``image:`` tag, ``--image``, the
notebook's default, ``JUPYTER_PIPELINE_IMAGE``, the config file's ``image``, the built-in
:data:`DEFAULT_IMAGE` (see :func:`jupyter_pipeline.compile.builder.build_pipeline_func`).

Example ``kfp.toml``::

    host = "https://kubeflow.example.com/pipeline"
    namespace = "team-a"
    image = "registry.example.com/ml/jupyter-pipeline-python:0.1.0"
    [env]
    MLFLOW_TRACKING_URI = "http://mlflow:5000"
    [[secrets]]
    name = "s3-credentials"
    env = { AWS_ACCESS_KEY_ID = "access-key", AWS_SECRET_ACCESS_KEY = "secret-key" }
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "DEFAULT_IMAGE",
    "ConfigError",
    "KfpConfig",
    "SecretEnv",
    "config_path",
    "load_config",
]


def _default_image() -> str:
    from jupyter_pipeline import __version__

    return f"jupyter-pipeline-python:{__version__}"


# An image that holds the project, kfp and the usual data-science stack; build it from the
# Dockerfile `jupyter-pipeline image` writes, or set `image` in the config.
DEFAULT_IMAGE = _default_image()


class ConfigError(Exception):
    """The KFP config file or notebook metadata is invalid (bad input, exit 2)."""


class SecretEnv(BaseModel):
    """A Kubernetes secret exposed to every step as environment variables.

    Attributes:
        name: The secret's name in the run's namespace.
        env: Environment variable → key inside the secret.
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    env: dict[str, str]


class KfpConfig(BaseModel):
    """Everything configurable about compiling for and talking to KFP."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = None
    namespace: str | None = None
    token: str | None = None
    cookies: str | None = None
    experiment: str | None = None
    image: str | None = Field(None, description="Default step image that holds the project.")
    packages: Literal["image", "pip"] = "image"
    base_image: str | None = Field(None, description="Image for packages='pip' (plain Python).")
    project_requirement: str | None = Field(
        None, description="Requirement that installs the project when packages='pip'."
    )
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[SecretEnv] = Field(default_factory=list)
    html: bool = True

    def merged(self, **overrides: Any) -> KfpConfig:
        """A copy with every non-None override applied (dicts and lists are extended)."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "env":
                data["env"] = {**data["env"], **value}
            elif key == "secrets":
                data["secrets"] = [*data["secrets"], *[SecretEnv.model_validate(s) for s in value]]
            else:
                data[key] = value
        return KfpConfig.model_validate(data)


def config_path() -> Path | None:
    """The user config file in use, if any."""
    env = os.environ.get("JUPYTER_PIPELINE_KFP_CONFIG")
    if env:
        return Path(env)
    try:
        from jupyter_core.paths import jupyter_config_dir

        path = Path(jupyter_config_dir()) / "jupyter_pipeline" / "kfp.toml"
    except Exception:  # jupyter_core missing or broken: no default file
        return None
    return path if path.exists() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the KFP config ({exc.strerror})") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import tomllib

        return tomllib.loads(text)
    except ModuleNotFoundError:
        raise ConfigError(f"{path}: TOML needs Python 3.11+; write the config as JSON") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None


def _validate(data: Any, where: str) -> KfpConfig:
    try:
        return KfpConfig.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from None


def load_config(
    notebook_metadata: dict[str, Any] | None = None,
    path: str | Path | None = None,
    *,
    use_env: bool = True,
) -> KfpConfig:
    """Load the KFP config (file < notebook metadata < environment).

    Args:
        notebook_metadata: The notebook's ``metadata`` (its ``jupyter_pipeline.kfp`` part is used).
        path: Config file to read instead of the default one.
        use_env: Apply the ``KF_PIPELINES_*`` / ``JUPYTER_PIPELINE_IMAGE`` variables.

    Raises:
        ConfigError: The file or the metadata is invalid.
    """
    file = Path(path) if path else config_path()
    config = _validate(_read_file(file), str(file)) if file else KfpConfig()
    meta = ((notebook_metadata or {}).get("jupyter_pipeline") or {}).get("kfp")
    if meta:
        from_nb = _validate(meta, "notebook metadata jupyter_pipeline.kfp")
        if from_nb.token or from_nb.cookies:
            raise ConfigError(
                "notebook metadata jupyter_pipeline.kfp holds credentials; move token/cookies "
                "to the config file or KF_PIPELINES_TOKEN"
            )
        config = config.merged(**from_nb.model_dump(exclude_unset=True))
    if use_env:
        config = config.merged(
            host=os.environ.get("KF_PIPELINES_ENDPOINT"),
            token=os.environ.get("KF_PIPELINES_TOKEN"),
            cookies=os.environ.get("KF_PIPELINES_COOKIES"),
            namespace=os.environ.get("KF_PIPELINES_NAMESPACE"),
            image=os.environ.get("JUPYTER_PIPELINE_IMAGE"),
        )
    return config
