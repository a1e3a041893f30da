from pathlib import Path

from setuptools import find_packages, setup


def requirements(name):
    return [line.strip() for line in Path(name).read_text().splitlines() if line.strip() and not line.startswith("#")]


setup(
    name="kquant",
    version="0.1.0",
    description="Freeze, optimize and int8-quantize TensorFlow/Keras models for Intel-architecture CPUs (oneDNN)",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kquant", "kquant.*"]),
    install_requires=requirements("requirements.txt"),
    extras_require={"test": requirements("requirements-test.txt"), "openvino": ["openvino>=2026.0"]},
    entry_points={"console_scripts": ["kquant=kquant.cli:main"]},
)
