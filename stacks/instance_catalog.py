"""Catalog of SageMaker GPU instance types: GPU count, GPU memory and NVMe-backed storage."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GPU_INSTANCE_CATALOG", "HOST_MEMORY_GIB", "GpuInstanceType", "UnknownInstanceTypeError"]


class UnknownInstanceTypeError(ValueError):
    """Raised for an instance type that is not a known SageMaker GPU instance."""


@dataclass(frozen=True, slots=True)
class GpuInstanceType:
    """A validated SageMaker GPU instance type.

    Attributes
    ----------
    name:
        The SageMaker name, e.g. ``ml.g5.2xlarge``.
    gpu_count:
        Number of GPUs on the instance.
    gpu_memory_gb:
        Memory of one GPU in GB (10^9 bytes).
    nvme_backed:
        True where the instance's storage is local NVMe; SageMaker then rejects
        ``VolumeSizeInGB`` and an EBS ``KmsKeyId`` on the endpoint config.
    """

    name: str
    gpu_count: int
    gpu_memory_gb: int
    nvme_backed: bool

    @property
    def family(self) -> str:
        """Instance family, e.g. ``g5`` for ``ml.g5.2xlarge``."""
        return self.name.split(".")[1]

    @property
    def memory_gib(self) -> int:
        """Host memory of the instance in GiB."""
        return HOST_MEMORY_GIB[self.name]

    @property
    def total_gpu_memory_gb(self) -> int:
        """Memory of all GPUs together, in GB."""
        return self.gpu_count * self.gpu_memory_gb

    @classmethod
    def parse(cls, name: str) -> GpuInstanceType:
        """Look ``name`` up in the catalog.

        Parameters
        ----------
        name:
            A SageMaker instance type such as ``ml.g5.12xlarge``.

        Returns
        -------
        GpuInstanceType
            The catalog entry.

        Raises
        ------
        UnknownInstanceTypeError
            If the name is not a known SageMaker GPU instance type.
        """
        try:
            return GPU_INSTANCE_CATALOG[name]
        except KeyError:
            families = sorted({entry.family for entry in GPU_INSTANCE_CATALOG.values()})
            raise UnknownInstanceTypeError(
                f"{name!r} is not a known SageMaker GPU instance type "
                f"(known families: {', '.join(families)})"
            ) from None


def _family(
    family: str, gpu_memory_gb: int, nvme_backed: bool, gpus_by_size: dict[str, int]
) -> dict[str, GpuInstanceType]:
    return {
        f"ml.{family}.{size}": GpuInstanceType(
            name=f"ml.{family}.{size}",
            gpu_count=gpus,
            gpu_memory_gb=gpu_memory_gb,
            nvme_backed=nvme_backed,
        )
        for size, gpus in gpus_by_size.items()
    }


_G_SIZES = {
    "xlarge": 1,
    "2xlarge": 1,
    "4xlarge": 1,
    "8xlarge": 1,
    "16xlarge": 1,
    "12xlarge": 4,
    "24xlarge": 4,
    "48xlarge": 8,
}

# Figures from the SageMaker pricing page's accelerated-computing table.
GPU_INSTANCE_CATALOG: dict[str, GpuInstanceType] = {
    **_family(
        "g4dn", 16, True, {k: v for k, v in _G_SIZES.items() if k not in {"24xlarge", "48xlarge"}}
    ),
    **_family("g5", 24, True, _G_SIZES),
    **_family("g6", 24, True, _G_SIZES),
    **_family("g6e", 48, True, _G_SIZES),
    **_family("p3", 16, False, {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    **_family("p4d", 40, True, {"24xlarge": 8}),
    **_family("p4de", 80, True, {"24xlarge": 8}),
    **_family("p5", 80, True, {"48xlarge": 8}),
    **_family("p5e", 141, True, {"48xlarge": 8}),
}

_G_MEMORY_GIB = {
    "xlarge": 16,
    "2xlarge": 32,
    "4xlarge": 64,
    "8xlarge": 128,
    "16xlarge": 256,
    "12xlarge": 192,
    "24xlarge": 384,
    "48xlarge": 768,
}

# Host memory per instance (same pricing table); inference components reserve a share of it.
HOST_MEMORY_GIB: dict[str, int] = {
    **{f"ml.g4dn.{size}": gib for size, gib in _G_MEMORY_GIB.items() if size in _G_SIZES},
    **{f"ml.g5.{size}": gib for size, gib in _G_MEMORY_GIB.items()},
    **{f"ml.g6.{size}": gib for size, gib in _G_MEMORY_GIB.items()},
    **{f"ml.g6e.{size}": 2 * gib for size, gib in _G_MEMORY_GIB.items()},
    "ml.p3.2xlarge": 61,
    "ml.p3.8xlarge": 244,
    "ml.p3.16xlarge": 488,
    "ml.p4d.24xlarge": 1152,
    "ml.p4de.24xlarge": 1152,
    "ml.p5.48xlarge": 2048,
    "ml.p5e.48xlarge": 2048,
}
