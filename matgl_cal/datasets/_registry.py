"""Registry of the datasets known to matgl_cal (paths, targets, units, checksums, sources)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["DataFile", "DatasetInfo", "get_dataset_info", "list_datasets", "register_dataset", "unregister_dataset"]


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes:
        path: Path relative to the data directory (POSIX separators).
        sha256: Expected sha256 hex digest (full, or a prefix of >= 8 characters; ``None`` skips the check).
        url: Direct download URL that reproduces the file byte for byte, or ``None`` if there is none.
    """

    path: str
    sha256: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", self.sha256):
            raise ValueError(f"sha256 must be 8-64 lowercase hex characters or None, got {self.sha256!r}.")


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry of one dataset.

    Attributes:
        name: Registry key, e.g. ``"matbench_log_gvrh"``.
        file: The structure/target file.
        target: Default target field.
        id_field: Record field that identifies an entry (used by the fold files).
        units: Units of the numeric fields, ``{field: units}``; ``""`` means unitless.
        layout: ``"records"`` for ``{"meta": ..., "data": [record, ...]}``; ``"list"`` for a plain JSON list.
        source: Where the file comes from (repository, commit, path), from ``PROVENANCE.md``.
        description: One line on what the dataset is.
        ood_folds: OOD fold file (Omee et al. 2024 / MatUQ layout), if any.
        cv_folds: Matbench v0.1 official 5-fold CV file, if any.
    """

    name: str
    file: DataFile
    target: str
    id_field: str
    units: MappingProxyType | dict = field(default_factory=dict)
    layout: Literal["records", "list"] = "records"
    source: str = ""
    description: str = ""
    ood_folds: DataFile | None = None
    cv_folds: DataFile | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("records", "list"):
            raise ValueError(f"layout must be 'records' or 'list', got {self.layout!r}.")
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))

    def units_of(self, target: str) -> str:
        """Units of ``target`` (``"unknown"`` if the registry does not record them)."""
        return self.units.get(target, "unknown")


_MATUQ = "GitHub researchdev7/MatUQ @ 8e8c9caf16459af9fc5d3a3af3ff949e3c4a2db5"
_MATUQ_NOTE = (
    f"{_MATUQ}, data/{{ds}}/<i>.cif + targets.csv, repackaged for matgl_cal (Matbench v0.1 data; "
    "no public URL gives this file byte for byte)"
)
_MATMINER = "PyPI matminer==0.4.2 sdist, matminer/datasets/{f}.csv, converted to JSON for matgl_cal"
_MATCALC_COMMIT = "aa76b41edb9ffb62f7efb2b5d3a3f7a8b2b4747d"
_MATCALC_RAW = f"https://raw.githubusercontent.com/materialsvirtuallab/matcalc/{_MATCALC_COMMIT}/benchmark_data/"


def _matbench(name: str, matuq: str, target_units: str, description: str, sha: dict[str, str], cv: bool) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        file=DataFile(f"{name}/{name}.json.gz", sha["data"]),
        target="target",
        id_field="id",
        units={"target": target_units, "nsites": "atoms"},
        source=_MATUQ_NOTE.format(ds=matuq),
        description=description,
        ood_folds=DataFile(f"{name}/{name}_ood_folds.json.gz", sha["ood"]),
        cv_folds=DataFile(f"{name}/{name}_matbench_v0.1_5fold.json.gz", sha["cv"]) if cv else None,
    )


# Full sha256 of the files as placed in ../shared/data; their first 16 hex digits equal PROVENANCE.md section 6.
_BUILTIN: list[DatasetInfo] = [
    _matbench(
        "matbench_dielectric",
        "dielectric",
        "",
        "Matbench v0.1 refractive index n (unitless), 4764 MP structures",
        {
            "data": "c4e94785cbdd250be768e164b189b5d81d0cb9b465d8f6ee3a30ffe2ed60946c",
            "ood": "2725d9c818d226fd2970d613be561bce603d897f59be098f5d87d495202cd534",
            "cv": "51e8a1d1dbc91058e89bc285dd365f860324f258bdb500b27f2fdd58879a93f7",
        },
        cv=True,
    ),
    _matbench(
        "matbench_log_gvrh",
        "elasticity",
        "log10(GPa)",
        "Matbench v0.1 log10 of the VRH shear modulus G_VRH/GPa, 10987 MP structures",
        {
            "data": "971b1b010c704752796f1f578551dfe7fe902c42cec9417353a09977e199dfc1",
            "ood": "8eeb7b5fecd2bf712bbeacfa6011bd8bec965deb48af76380bb9088487128b74",
            "cv": "4778c3958f7783e98fbbf259579b5d6674b57f017a82c97f32ce0315cab55f7a",
        },
        cv=True,
    ),
    _matbench(
        "matbench_perovskites",
        "perovskites",
        "eV/cell",
        "Matbench v0.1 formation energy per 5-atom cell (RPBE), 18928 Castelli perovskites",
        {
            "data": "a88925eb564d9f6aca9b04d85bb0cd368561e245f8b90151b08023d74e60ef30",
            "ood": "c76d7d08ee6b3b9076f89c3dd38d8bd91fd5851777cdb5d9a336676bf02711b1",
            "cv": "165454ec659e0ad0f86c2ad434cdefc7235806923ce90b9394a7c8db18779dda",
        },
        cv=True,
    ),
    _matbench(
        "matbench_jdft2d",
        "jdft2d",
        "meV/atom",
        "Matbench v0.1 exfoliation energy, 636 JARVIS-DFT 2D materials",
        {
            "data": "4865e3cf13ec5619fd08c75469f89edd9749b3e98634ba0481671aa5920be239",
            "ood": "52531d0698247fcf63c3d64fadcffa4e97e97e924eef2a98131ad64749e868a4",
            "cv": "152b5755ccb644dd118e58f946fe92bf3fb7c3777524ce444525ac119eed3aa9",
        },
        cv=True,
    ),
    _matbench(
        "matbench_mp_gap",
        "mp_gap",
        "eV",
        "Matbench v0.1 PBE band gap, 106113 MP structures",
        {
            "data": "ee91028550bdbe44d4ee96bdc6a0d2673f04d07de561f73e0fb966c1df3128c6",
            "ood": "c14cc8bd80fbaa42d2a059479dc0b77337595f867b15125da6c53aff1e83bd8b",
            "cv": "c83bf1a7e55fd0140fe9bb719fe145bc58a8c9a181d1aff0b391e7f0f2736d0e",
        },
        cv=True,
    ),
    _matbench(
        "jarvis_supercon_3d",
        "supercon3d",
        "K",
        "JARVIS-DFT BCS superconductor critical temperature Tc, 1016 structures (as used by MatUQ)",
        {
            "data": "695a051f3601d9647dd60e562d14a14bf814a3bdff7dc135f53ac9da8d1d7ca2",
            "ood": "2384513c55fee2e863767fcad4f461092a6c9e0a3b2239ee0bbcfc49022e57d5",
        },
        cv=False,
    ),
    DatasetInfo(
        name="piezoelectric_tensor",
        file=DataFile(
            "piezoelectric_tensor/piezoelectric_tensor.json.gz",
            "bfa044828634235e4b6f2d663f4f752718d7870c7c607d02b84138af5ab39187",
        ),
        target="eij_max",
        id_field="material_id",
        units={"eij_max": "C/m^2", "volume": "A^3", "nsites": "atoms", "space_group": ""},
        source=_MATMINER.format(f="piezoelectric_tensor"),
        description="de Jong et al. 2015 piezoelectric tensors (941 MP materials); eij_max = max |e_ij|",
    ),
    DatasetInfo(
        name="dielectric_constant",
        file=DataFile(
            "dielectric_constant/dielectric_constant.json.gz",
            "ef5bd596eda5bfee9bf455ff67cf5c4a593df4995a3ea100eba5c2dd7fe546b3",
        ),
        target="n",
        id_field="material_id",
        units={
            "n": "",
            "band_gap": "eV",
            "poly_electronic": "",
            "poly_total": "",
            "volume": "A^3",
            "nsites": "atoms",
            "space_group": "",
        },
        source=_MATMINER.format(f="dielectric_constant"),
        description="Petousis et al. 2017 dielectric constants (1056 MP materials); n = refractive index",
    ),
    DatasetInfo(
        name="elastic_tensor_2015",
        file=DataFile(
            "elastic_tensor_2015/elastic_tensor_2015.json.gz",
            "f8dcdbbfea616174e36f24a42f4b4eeee4fbe4ab3e939ad8267fb2e86c046e65",
        ),
        target="log10_G_VRH",
        id_field="material_id",
        units={
            "G_VRH": "GPa",
            "K_VRH": "GPa",
            "G_Reuss": "GPa",
            "G_Voigt": "GPa",
            "K_Reuss": "GPa",
            "K_Voigt": "GPa",
            "log10_G_VRH": "log10(GPa)",
            "log10_K_VRH": "log10(GPa)",
            "poisson_ratio": "",
            "elastic_anisotropy": "",
            "volume": "A^3",
            "nsites": "atoms",
            "space_group": "",
        },
        source=_MATMINER.format(f="elastic_tensor"),
        description="de Jong et al. 2015 elastic tensors (1181 MP materials); log10_G_VRH as in matbench_log_gvrh",
    ),
    DatasetInfo(
        name="flla_2015",
        file=DataFile(
            "flla_2015/flla_2015.json.gz", "41094457e3c513f901f84cc7e51bf9f44979e88245b222ac33efc74c5e5f38e1"
        ),
        target="formation_energy_per_atom",
        id_field="material_id",
        units={
            "formation_energy_per_atom": "eV/atom",
            "formation_energy": "eV",
            "e_above_hull": "eV/atom",
            "nsites": "atoms",
        },
        source=_MATMINER.format(f="flla_2015"),
        description="Faber et al. 2015 (FLLA) MP formation energies, 3938 structures",
    ),
    DatasetInfo(
        name="jarvis_dft3d_sample50",
        file=DataFile(
            "jarvis_dft3d_sample50/jarvis_dft3d_sample50_optb88vdw_bandgap.json.gz",
            "740ce3ef986de52ef98dfedfbaa02af559fcdb264ecd649dfffa3ef5c9075c6d",
        ),
        target="optb88vdw_bandgap",
        id_field="jid",
        units={"optb88vdw_bandgap": "eV", "nsites": "atoms"},
        source=(
            "GitHub usnistgov/alignn @ a8be0bed552ac70c14b8db825a48dbca1d14ad8d, alignn/examples/sample_data/, "
            "converted to JSON for matgl_cal"
        ),
        description="50 JARVIS-DFT dft_3d structures with OptB88vdW band gaps (smoke tests only)",
    ),
    DatasetInfo(
        name="wbm",
        file=DataFile(
            "matcalc_benchmark_data/wbm-random-pbe52-equilibrium-2025.1.json.gz",
            "8fc0aa85e6c9d56b03f8c742a377a143a8fc885b5930e11af596e43c1832d9d0",
            _MATCALC_RAW + "wbm-random-pbe52-equilibrium-2025.1.json.gz",
        ),
        target="formation_energy_per_atom",
        id_field="material_id",
        units={
            "energy": "eV",
            "corrected_energy": "eV",
            "formation_energy_per_atom": "eV/atom",
            "corrected_formation_energy_per_atom": "eV/atom",
        },
        layout="list",
        source=f"GitHub materialsvirtuallab/matcalc @ {_MATCALC_COMMIT}, benchmark_data/ (verbatim copy)",
        description="972 random WBM structures (PBE 52), total and formation energies",
    ),
    DatasetInfo(
        name="mp_binary_elasticity",
        file=DataFile(
            "matcalc_benchmark_data/mp-binary-pbe-elasticity-2025.1.json.gz",
            "5689599491322805bda913663eeef8d567f64ada80c90173d50fb7b6fb0b5896",
            _MATCALC_RAW + "mp-binary-pbe-elasticity-2025.1.json.gz",
        ),
        target="bulk_modulus_vrh",
        id_field="mp_id",
        units={"bulk_modulus_vrh": "GPa", "shear_modulus_vrh": "GPa"},
        layout="list",
        source=f"GitHub materialsvirtuallab/matcalc @ {_MATCALC_COMMIT}, benchmark_data/ (verbatim copy)",
        description="3953 MP binaries (Jan 2025) with PBE VRH bulk and shear moduli",
    ),
    DatasetInfo(
        name="alexandria_binary_phonon",
        file=DataFile(
            "matcalc_benchmark_data/alexandria-binary-pbe-phonon-2025.1.json.gz",
            "4a524330da5173a09bca362f16ed2479a1c6882ee50913a71067444ac8e63a56",
            _MATCALC_RAW + "alexandria-binary-pbe-phonon-2025.1.json.gz",
        ),
        target="heat_capacity",
        id_field="mp_id",
        units={"heat_capacity": "J/(K mol)"},
        layout="list",
        source=f"GitHub materialsvirtuallab/matcalc @ {_MATCALC_COMMIT}, benchmark_data/ (verbatim copy)",
        description="1170 Alexandria binaries with the phonon heat capacity at 300 K (per mole of cells)",
    ),
]

_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, *, overwrite: bool = False) -> None:
    """Add a dataset to the registry (e.g. your own file with the same layout).

    Args:
        info: The entry; ``info.name`` becomes the key for :func:`load_dataset`.
        overwrite: Replace an existing entry of the same name.

    Raises:
        TypeError: ``info`` is not a :class:`DatasetInfo`.
        ValueError: The name is taken and ``overwrite`` is False.
    """
    if not isinstance(info, DatasetInfo):
        raise TypeError(f"info must be a DatasetInfo, got {type(info).__name__}.")
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[info.name] = info


def unregister_dataset(name: str) -> None:
    """Remove a dataset from the registry (no error if absent)."""
    _REGISTRY.pop(name, None)


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def get_dataset_info(name: str) -> DatasetInfo:
    """Registry entry of ``name``.

    Raises:
        ValueError: Unknown name (the message lists the known ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} ({name!r}).")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}.") from None


for _info in _BUILTIN:
    register_dataset(_info)
del _info
