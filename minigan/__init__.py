"""minigan: a from-scratch GAN engine on NumPy (CuPy for the GPU) with hand-written, exact gradients."""

__version__ = "0.1.0"
