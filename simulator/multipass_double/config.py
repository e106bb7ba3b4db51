"""Where the double keeps things, from the environment.

* ``MULTIPASS_DOUBLE_DATA``: the data folder (instance records, disks, network state, lock).
  Default: ``<repo>/.cache/multipass-double`` (ignored by git).
* ``MULTIPASS_DOUBLE_IMAGES``: the machine-wide image cache (the debootstrapped rootfs, built once
  per machine and shared by every data folder). Default: ``$XDG_CACHE_HOME/agentvm-multipass-double``
  or ``~/.cache/agentvm-multipass-double``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_images() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentvm-multipass-double"


@dataclass(frozen=True)
class Paths:
    data: Path
    images: Path

    @classmethod
    def from_env(cls) -> Paths:
        data = os.environ.get("MULTIPASS_DOUBLE_DATA") or str(REPO_ROOT / ".cache" / "multipass-double")
        images = os.environ.get("MULTIPASS_DOUBLE_IMAGES") or str(_default_images())
        return cls(data=Path(data).resolve(), images=Path(images).resolve())

    @property
    def instances(self) -> Path:
        return self.data / "instances"

    @property
    def layers(self) -> Path:
        return self.data / "layers"

    @property
    def network(self) -> Path:
        return self.data / "network"

    @property
    def lock(self) -> Path:
        return self.data / "lock"

    @property
    def state_file(self) -> Path:
        return self.data / "state.json"

    def instance_dir(self, name: str) -> Path:
        return self.instances / name

    @property
    def registry(self) -> Path:
        """Machine-wide list of data folders in use, so `multipass-double down` finds them all."""
        return self.images / "data-dirs"
