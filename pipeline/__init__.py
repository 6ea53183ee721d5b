"""Archive colorizer: batch colorization of black-and-white photo archives."""

__version__ = "0.1.0"
