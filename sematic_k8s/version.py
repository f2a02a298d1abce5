"""The library's version (``sematic_k8s.__version__``), in a module of its own so that packaging can read
it without importing the package root (which imports the resolvers, which import packaging)."""

import os

__version__ = "0.1.0"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # the sematic_k8s package directory
