"""Packaging beyond pyproject.toml: ship the repository's ``assets/`` and ``app/`` folders inside the
wheel without moving them, as the packages ``blockmask_assets`` and ``blockmask_app`` (the library
finds them with importlib.resources, so an editable install and a wheel resolve them the same way)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["blockmask", "blockmask.*"]), "blockmask_assets", "blockmask_app"],
    package_dir={"blockmask_assets": "assets", "blockmask_app": "app"},
    package_data={
        "blockmask_assets": ["*.md", "models/*.md", "models/*/*.json", "models/*/*.safetensors", "models/*/*.png",
                             "models/*/*/*.json", "models/*/*/*.safetensors", "classifier/*", "masks/*.json", "frontier/*.json",
                             "masks/*.md"],
        "blockmask_app": ["*.py", "*.json", "components/*"],
    },
)
