"""minigan: a from-scratch GAN engine on NumPy (CuPy for the GPU) with hand-written, exact gradients."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="minigan",
    version="0.1.0",
    description="A from-scratch GAN engine on NumPy/CuPy with hand-written, finite-difference-checked gradients",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["minigan", "minigan.*"]),
    # The runtime dependency is NumPy, and nothing else: everything optional lives in extras.
    install_requires=["numpy>=1.22"],
    extras_require={
        "gpu": ["cupy"],
        "eval": ["scipy"],
        "plot": ["matplotlib"],
        "progress": ["tqdm"],
        "images": ["pillow"],  # JPEG files in pix2pix folders (PNG is read by minigan itself)
        # The tests' independent references run wherever the test extra is installed (CI included): SciPy's
        # matrix square root for FID, Pillow's PNG codec, matplotlib's plot path; threadpoolctl pins BLAS threads.
        "test": ["pytest>=7", "hypothesis>=6", "scipy", "pillow", "matplotlib", "threadpoolctl>=3.5"],
    },
    entry_points={"console_scripts": ["minigan=minigan.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
