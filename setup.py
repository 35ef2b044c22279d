"""What the wheel holds; the rest of the project's metadata is in pyproject.toml.

Every package under router/ is found, and the shipped templates (the repository's top-level
templates/) are installed as package data in router/templates/, where render.py looks for them
in an installed wheel. This is a setup.py because pyproject.toml's `packages.find` cannot add a
package whose folder lies outside the tree it searches.
"""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    packages=[
        *find_packages(include=["router", "router.*"]),
        "router.templates",
        *(f"router.templates.{p}" for p in find_namespace_packages(where="templates")),
    ],
    package_dir={"router.templates": "templates"},
    package_data={"": ["*.j2"]},
)
